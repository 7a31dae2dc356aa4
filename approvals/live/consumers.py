"""The reviewer's live connection: action events for the actions they may see, and presence.

Messages a page sends (JSON): ``ping`` (answered ``pong``); ``resume`` with
``since`` (the last ``seq`` it heard): the events it missed are sent again,
or ``resync`` when that cannot be told; ``watch`` with ``action_id``: join
that action's presence (approvals.live.presence), answered with ``presence``
messages listing who else is looking; ``unwatch``; ``observe`` with
``action_ids`` (the queue's rows, at most OBSERVE_MAX): listen to those
actions' presence without joining it, answered with a ``presence`` message per
action whenever who is looking at it changes (the queue shows it on the rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from approvals.live.events import STAFF_GROUP, missed_events, reviewer_group
from approvals.live.presence import MISSED_BEATS, PresenceBook, heartbeat_seconds, presence_group
from approvals.policies.separation_of_duties import user_group_ids
from approvals.selectors import actions as selectors

log = logging.getLogger(__name__)

OBSERVE_MAX = 100  # a queue page shows 50 rows


@database_sync_to_async
def _groups_for(user) -> list[str]:
    if user.is_staff:
        return [STAFF_GROUP]
    return [reviewer_group(gid) for gid in sorted(user_group_ids(user))]


@database_sync_to_async
def _missed(user, since: int) -> tuple[list[dict], bool]:
    return missed_events(staff=user.is_staff, group_ids=user_group_ids(user), since=since)


@database_sync_to_async
def _may_see(user, action_id: uuid.UUID) -> bool:
    return selectors.actions_for(user).filter(id=action_id).exists()


@database_sync_to_async
def _visible(user, action_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    return set(selectors.actions_for(user).filter(id__in=action_ids).values_list("id", flat=True))


class ReviewerEventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        self.joined = await _groups_for(user)
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        self.watching: uuid.UUID | None = None
        self.book: PresenceBook | None = None
        self.heartbeat: asyncio.Task | None = None
        # The queue's rows whose presence this socket listens to (not joins): action id -> who is looking.
        self.observed: dict[str, PresenceBook] = {}
        await self.accept()

    async def disconnect(self, code):
        await self._unwatch()
        await self._unobserve()
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "resume":
            await self._resume(content.get("since"))
        elif kind == "watch":
            await self._watch(content.get("action_id"))
        elif kind == "unwatch":
            await self._unwatch()
        elif kind == "observe":
            await self._observe(content.get("action_ids"))

    async def dispatch(self, message):
        if message["type"] == "action.event":
            # Relaying an event touches no database, so skip what Channels does before every handler:
            # close_old_connections via sync_to_async, through the one thread such calls share outside a
            # request. For each event every socket of the process took its turn there and back: most of the
            # push's latency with 200 reviewers connected (docs/BENCHMARKS.md, "Live push").
            await self.action_event(message)
            return
        await super().dispatch(message)

    async def action_event(self, message):
        await self.send_json({"type": "action", **message["event"]})

    # --- catching up -----------------------------------------------------------------------

    async def _resume(self, since) -> None:
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            await self.send_json({"type": "resync"})
            return
        events, complete = await _missed(self.scope["user"], since)
        for event in events:
            await self.send_json({"type": "action", **event, "replayed": True})
        if not complete:
            await self.send_json({"type": "resync"})

    # --- presence --------------------------------------------------------------------------

    def _me(self) -> dict:
        user = self.scope["user"]
        return {
            "action_id": str(self.watching),
            "channel": self.channel_name,
            "user_id": user.pk,
            "username": user.get_username(),
        }

    async def _watch(self, raw_id) -> None:
        try:
            action_id = uuid.UUID(str(raw_id))
        except ValueError:
            return
        if action_id == self.watching:
            return
        await self._unwatch()
        if not await _may_see(self.scope["user"], action_id):
            return  # not theirs to see: they neither learn nor reveal who is looking
        beat = heartbeat_seconds()
        self.watching = action_id
        self.book = PresenceBook(
            own_channel=self.channel_name, own_user_id=self.scope["user"].pk, ttl=beat * MISSED_BEATS
        )
        await self.channel_layer.group_add(presence_group(action_id), self.channel_name)
        await self.channel_layer.group_send(presence_group(action_id), {"type": "presence.join", **self._me()})
        await self._send_presence()
        self.heartbeat = asyncio.get_running_loop().create_task(self._beat(action_id, beat))

    async def _unwatch(self) -> None:
        action_id = getattr(self, "watching", None)
        if action_id is None:
            return
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeat
            self.heartbeat = None
        group = presence_group(action_id)
        await self.channel_layer.group_send(group, {"type": "presence.leave", **self._me()})
        await self.channel_layer.group_discard(group, self.channel_name)
        self.watching, self.book = None, None

    async def _beat(self, action_id: uuid.UUID, every: float) -> None:
        group = presence_group(action_id)
        while self.watching == action_id:
            await asyncio.sleep(every)
            try:
                await self.channel_layer.group_send(group, {"type": "presence.beat", **self._me()})
                if self.book is not None and self.book.expire(time.monotonic()):
                    await self._send_presence()
            except Exception:  # a blip of the channel layer must not end presence for good
                log.warning("presence heartbeat for %s failed; trying again", action_id, exc_info=True)

    def _about_mine(self, message) -> bool:
        return self.book is not None and message.get("action_id") == str(self.watching)

    # --- observing the queue's rows ------------------------------------------------------------
    # A queue page listens to the presence groups of the rows it shows; it never says "join", so it is
    # nobody's viewer. It asks the watchers already there to say so (presence.ask) rather than wait a beat.

    async def _observe(self, raw_ids) -> None:
        wanted: list[uuid.UUID] = []
        for raw in raw_ids if isinstance(raw_ids, list) else []:
            try:
                wanted.append(uuid.UUID(str(raw)))
            except ValueError:
                continue
        visible = await _visible(self.scope["user"], wanted[:OBSERVE_MAX]) if wanted else set()
        keep = {str(a) for a in visible}
        for gone in set(self.observed) - keep:
            del self.observed[gone]
            await self.channel_layer.group_discard(presence_group(gone), self.channel_name)
        ttl = heartbeat_seconds() * MISSED_BEATS
        for action_id in keep - set(self.observed):
            self.observed[action_id] = PresenceBook(
                own_channel=self.channel_name, own_user_id=self.scope["user"].pk, ttl=ttl
            )
            await self.channel_layer.group_add(presence_group(action_id), self.channel_name)
            await self.channel_layer.group_send(
                presence_group(action_id),
                {"type": "presence.ask", "action_id": action_id, "channel": self.channel_name},
            )

    async def _unobserve(self) -> None:
        for action_id in list(getattr(self, "observed", {})):
            await self.channel_layer.group_discard(presence_group(action_id), self.channel_name)
        self.observed = {}

    async def _observed_saw(self, message, *, leaving: bool = False) -> None:
        action_id = message.get("action_id")
        book = getattr(self, "observed", {}).get(action_id)
        if book is None:
            return
        now = time.monotonic()
        if leaving:
            changed = book.left(message["channel"])
        else:
            changed = book.saw(
                channel=message["channel"], user_id=message["user_id"], username=message["username"], now=now
            )
        changed = book.expire(now) or changed
        if changed:
            await self.send_json({"type": "presence", "action_id": action_id, "viewers": book.names()})

    async def presence_ask(self, message):
        """A queue page wants to know who is looking: say so, if this socket is."""
        if self._about_mine(message) and message["channel"] != self.channel_name:
            await self.channel_layer.send(message["channel"], {"type": "presence.here", **self._me()})

    async def _saw(self, message) -> None:
        if self.book.saw(
            channel=message["channel"], user_id=message["user_id"], username=message["username"], now=time.monotonic()
        ):
            await self._send_presence()

    async def presence_join(self, message):
        await self._observed_saw(message)
        if not self._about_mine(message) or message["channel"] == self.channel_name:
            return
        # Tell the newcomer we are here, directly.
        await self.channel_layer.send(message["channel"], {"type": "presence.here", **self._me()})
        await self._saw(message)

    async def presence_here(self, message):
        await self._observed_saw(message)
        if self._about_mine(message):
            await self._saw(message)

    async def presence_beat(self, message):
        await self._observed_saw(message)
        if self._about_mine(message):
            await self._saw(message)

    async def presence_leave(self, message):
        await self._observed_saw(message, leaving=True)
        if self._about_mine(message) and self.book.left(message["channel"]):
            await self._send_presence()

    async def _send_presence(self) -> None:
        if self.book is None:
            return
        names = self.book.names()
        await self.send_json({"type": "presence", "action_id": str(self.watching), "viewers": names})
