"""Beat's heartbeat: a file under COUNTERSIGN_VAR_DIR holding the time beat last published a task.

Beat publishes ``approvals.beat_heartbeat`` every HEARTBEAT_SECONDS (settings.CELERY_BEAT_SCHEDULE); the write happens
in beat itself, on publishing (config/celery_app.py), so its age says whether beat is alive and reaches the broker,
whatever the workers are doing. ``manage.py check_beat_heartbeat --max-age 120`` (beat's container healthcheck)
reads it. A file, not Redis: the check then runs where beat runs, with no broker needed to say the broker is down.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

HEARTBEAT_TASK = "approvals.beat_heartbeat"
HEARTBEAT_SECONDS = 30.0


def heartbeat_path() -> Path:
    from django.conf import settings

    return Path(settings.VAR_DIR) / "beat-heartbeat"


def record_heartbeat(now: float | None = None) -> None:
    path = heartbeat_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a healthcheck never reads a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".beat-heartbeat.")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{time.time() if now is None else now:.3f}\n")
    os.replace(tmp, path)


def heartbeat_age(now: float | None = None) -> float | None:
    """Seconds since beat's last heartbeat; None when there is none (beat never ran here) or it is unreadable."""
    try:
        at = float(heartbeat_path().read_text().strip())
    except (OSError, ValueError):
        return None
    return max(0.0, (time.time() if now is None else now) - at)
