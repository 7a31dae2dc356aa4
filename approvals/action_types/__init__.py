"""The built-in action types, one module each, and what they share: the hardened HTTP client every type that
speaks HTTP sends with (``transport``, over ``tls``) and the check of an action's parameters against its type
(``params``). The contract they fulfil and the registry are in ``catalog``.
"""

BUILTIN_TYPES = [
    "approvals.action_types.http_request.HttpRequest",
    "approvals.action_types.decision_only.DecisionOnly",
    "approvals.action_types.scim_membership.ScimGroupMembership",
    "approvals.action_types.email_send.EmailSend",
    "approvals.action_types.slack_post.SlackPostMessage",
    "approvals.action_types.slack_delete.SlackDeleteMessage",
    "approvals.action_types.file_write.FileWrite",
    "approvals.action_types.human_question.HumanQuestion",
    "approvals.action_types.mcp_tool_call.McpToolCall",
]
