"""Who else is looking at an action right now.

Each detail page's socket that watches an action joins the channel-layer
group ``presence-<action id>`` and says so (``presence.join``); whoever is
already there answers the newcomer directly (``presence.here``), every
watcher repeats itself every ``COUNTERSIGN_PRESENCE_HEARTBEAT_SECONDS``
(``presence.beat``) and says goodbye when it goes (``presence.leave``).
Each socket keeps its own book of the others and forgets one it has not
heard from for three heartbeats (a crashed process says no goodbye).

Nothing is stored: the channel layer carries it, so it works across web
processes with channels-redis and inside the one embedded process with the
in-memory layer alike. Only sockets whose reviewer may see the action join
its group, so only they learn who is looking.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

MISSED_BEATS = 3


def presence_group(action_id) -> str:
    return f"presence-{action_id}"


def heartbeat_seconds() -> float:
    return float(getattr(settings, "COUNTERSIGN_PRESENCE_HEARTBEAT_SECONDS", 10.0))


@dataclass
class Viewer:
    channel: str
    user_id: int
    username: str
    seen: float


class PresenceBook:
    """The other watchers of one action, as one socket knows them."""

    def __init__(self, *, own_channel: str, own_user_id: int, ttl: float):
        self.own_channel = own_channel
        self.own_user_id = own_user_id
        self.ttl = ttl
        self._viewers: dict[str, Viewer] = {}

    def names(self) -> list[str]:
        """Who else is looking: other people, each once (the same reviewer's other tabs are not 'else')."""
        return sorted({v.username for v in self._viewers.values() if v.user_id != self.own_user_id})

    def saw(self, *, channel: str, user_id: int, username: str, now: float) -> bool:
        """Record a sign of life; True when the list of names changed."""
        if channel == self.own_channel:
            return False
        before = self.names()
        self._viewers[channel] = Viewer(channel, int(user_id), str(username), now)
        return self.names() != before

    def left(self, channel: str) -> bool:
        before = self.names()
        self._viewers.pop(channel, None)
        return self.names() != before

    def expire(self, now: float) -> bool:
        before = self.names()
        self._viewers = {c: v for c, v in self._viewers.items() if now - v.seen <= self.ttl}
        return self.names() != before
