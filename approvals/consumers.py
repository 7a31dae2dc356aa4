"""The reviewer's live connection: action events for the actions they may see."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from approvals import outbox
from approvals.events import STAFF_GROUP, reviewer_group
from approvals.permissions import user_group_ids


@database_sync_to_async
def _groups_for(user) -> list[str]:
    if user.is_staff:
        return [STAFF_GROUP]
    return [reviewer_group(gid) for gid in sorted(user_group_ids(user))]


class ReviewerEventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        outbox.ensure_embedded_relay()
        self.joined = await _groups_for(user)
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def action_event(self, message):
        await self.send_json({"type": "action", **message["event"]})
