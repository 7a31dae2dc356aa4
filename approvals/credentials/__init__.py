"""Credentials, once: encryption at rest (``crypto``), the scoped view an executor is handed (``scoped``) and the one
redactor that scrubs a secret, in any encoding, out of whatever comes back (``redaction``).

Creating, rotating and re-scoping a credential are writes: ``approvals.services.credentials``. May import
``approvals.models`` and the foundations (``audit``, ``catalog``); never services, selectors or senders.
"""
