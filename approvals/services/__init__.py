"""The only code that changes an action's state.

Every function here locks the action row, checks its state, writes the
change, its audit event and its side effects (through the outbox) in one
transaction. Views, consumers, Slack handlers and tasks all call these.
"""

from approvals.services.execution import (
    execute_action,
    redispatch_lost_executions,
    settle_interrupted_executions,
)
from approvals.services.outcomes import resolve_unknown_outcome
from approvals.services.proposals import Proposal, propose_action
from approvals.services.reviews import (
    approve_action,
    cancel_action,
    escalate_action,
    expire_due_actions,
    reject_action,
    send_due_reminders,
)

__all__ = [
    "Proposal",
    "approve_action",
    "cancel_action",
    "escalate_action",
    "execute_action",
    "expire_due_actions",
    "propose_action",
    "redispatch_lost_executions",
    "reject_action",
    "resolve_unknown_outcome",
    "send_due_reminders",
    "settle_interrupted_executions",
]
