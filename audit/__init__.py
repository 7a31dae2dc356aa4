"""The audit log: an append-only, hash-chained record of everything that happened, below every other app.

Owns the one writer (``chain.record_event``, ``chain.record_refusal``, ``chain.Actor``), the chain's verification
(``chain.verify_log``), signed checkpoints (``checkpoints``) and canonical JSON (``canonical``), which is what gets
hashed. Imports Django and ``config`` only: never ``agents`` or ``approvals``, which both write through it.
"""
