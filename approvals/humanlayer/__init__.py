"""A HumanLayer-compatible API under ``/humanlayer/v1``: code written for the ``humanlayer`` SDK
keeps working with ``HUMANLAYER_API_BASE`` pointed at Countersign (see docs/agents.md)."""
