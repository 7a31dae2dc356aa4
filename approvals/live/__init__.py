"""Live updates: what a push says and who hears it (``events``), the reviewers' websocket (``consumers``, ``routing``)
and who else is looking at an action (``presence``).

Reads only; a push is written by the outbox (``approvals.outbox``). May import selectors and policies, never services.
"""
