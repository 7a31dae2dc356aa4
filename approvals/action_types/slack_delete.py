"""``slack.delete_message``: delete one message the bot posted (Slack ``chat.delete``) — the undo of
``slack.post_message``, proposed through the normal policies like any action (approvals.services.access)."""

from __future__ import annotations

from typing import Any

from approvals.action_types.slack_post import (
    THREAD_TS_PATTERN,
    SlackChannelClient,
    SlackPostMessage,
)
from catalog.base import Preview, shorten


class SlackMessageDeleter(SlackChannelClient):
    """The channel client of ``slack.post_message``, narrowed to deleting one message in its one channel."""

    __slots__ = ()

    def delete_message(self, ts: str) -> dict[str, Any]:
        return self._call("chat_delete", writes=True, channel=self.channel, ts=ts)


class SlackDeleteMessage(SlackPostMessage):
    """Checked and given its client as a post is (the credential's channel scope, at proposal and again at execution),
    with a client that can only delete."""

    client_class = SlackMessageDeleter
    name = "slack.delete_message"
    title = "Delete a Slack message"
    description = (
        "Deletes one message the bot posted (Slack chat.delete), by its channel and ts: the undo of "
        "slack.post_message. The credential's channel scope applies as for posting."
    )
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["credential", "channel", "ts"],
        "properties": {
            "credential": {"type": "string", "minLength": 1, "maxLength": 64},
            "channel": {"type": "string", "minLength": 2, "maxLength": 81},
            "ts": {"type": "string", "pattern": THREAD_TS_PATTERN, "description": "The message's timestamp."},
        },
    }
    preview_reads = False
    preview_offline = True

    def describe(self, params: dict[str, Any]) -> str:
        return f"Delete the message {shorten(params.get('ts') or '', 30)} in {shorten(params.get('channel') or '', 81)}"

    def execute(self, params: dict[str, Any], client: SlackMessageDeleter) -> dict[str, Any]:
        data = client.delete_message(params["ts"])
        return {"channel": data.get("channel"), "ts": data.get("ts"), "deleted": True}

    def preview(self, params: dict[str, Any], client) -> Preview:
        return self.preview_without_reads(params, params.get("credential", ""))

    def preview_without_reads(self, params: dict[str, Any], credential_name: str) -> Preview:
        return Preview(
            kind="message",
            title=self.describe(params),
            notes=["the message is deleted for everyone in the channel; this cannot be undone"],
        )

    def reverse(self, params, result, before, credential):
        return None  # a deleted message is gone
