from approvals.models.access import AccessLease
from approvals.models.action import ActionRequest, ActionStatus, Review
from approvals.models.credential import Credential
from approvals.models.grant import ExecutionGrant
from approvals.models.identity import OidcIdentity
from approvals.models.mcp import McpUpstream
from approvals.models.notification import Notification
from approvals.models.outbox import OutboxMessage
from approvals.models.policy import ExecutionSwitch, PolicyRule, PolicyVersion
from approvals.models.slack import SlackIdentity
from approvals.models.token import ReviewerToken
from approvals.models.webhook import WebhookDelivery

__all__ = [
    "AccessLease",
    "ActionRequest",
    "ActionStatus",
    "Credential",
    "ExecutionGrant",
    "ExecutionSwitch",
    "McpUpstream",
    "Notification",
    "OidcIdentity",
    "OutboxMessage",
    "PolicyRule",
    "PolicyVersion",
    "Review",
    "ReviewerToken",
    "SlackIdentity",
    "WebhookDelivery",
]
