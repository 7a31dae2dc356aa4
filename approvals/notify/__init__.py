"""Telling people and agents what happened, away from the page: e-mail to reviewers (``email``), signed webhooks to
agents (``webhooks``, ``webhook_log``, ``callbacks`` for where a webhook may go) and which notifications an action
gets (``notifications``).

Senders run inside the outbox and raise ``approvals.outbox.transport.TransportError``; they never change an
action's state. May import models, selectors, presentation, policies and the foundations; never services.
"""
