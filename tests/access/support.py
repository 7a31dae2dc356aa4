"""What the time-boxed access tests share: the suite's SCIM server (tests/support/scim.py), and a clock the tests
move instead of sleeping."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from tests.support.scim import GROUP, SCIM_TOKEN, USER, ScimServer

__all__ = ["GROUP", "SCIM_TOKEN", "USER", "Clock", "ScimServer"]


class Clock:
    """``timezone.now()`` moved forward by the test: every service reads the time through it."""

    def __init__(self, monkeypatch):
        self.offset = timedelta(0)
        real_now = timezone.now
        monkeypatch.setattr(timezone, "now", lambda: real_now() + self.offset)

    def advance(self, **delta: float) -> datetime:
        self.offset += timedelta(**delta)
        return timezone.now()
