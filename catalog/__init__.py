"""What an action type is, and which exist: the contract (``base.ActionType``), risk levels (``risk``) and the
registry (``registry``).

Below both ``agents`` (capabilities name action types) and ``approvals`` (which implements the built-in types in
``approvals/action_types/`` and registers them when the app is ready). Imports nothing of Countersign's.
"""
