"""Reads, always scoped to who is asking: actions (``actions``), the reviewer's desk queue and its steps (``desk``),
history and the dashboard (``dashboard``), the audit log's filters (``audit``), the API's shape of an action
(``presenters``) and keyset pages, once (``keyset``).

Never writes, never imports ``approvals.services``, the outbox or the senders.
"""
