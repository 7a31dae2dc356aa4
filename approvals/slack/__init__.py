"""Slack: the Web API client with its retry rule (``client``), message blocks within Slack's limits (``blocks``),
mrkdwn escaping (``mrkdwn``), the request messages and their updates (``notify``), button and modal handling
(``interactions``) and linked Slack users (``users``).

Decisions made in Slack go through ``approvals.services`` like every other channel. The senders raise
``approvals.outbox.transport.TransportError``.
"""
