"""Structured logs: one JSON object per line, with the request id of the request or task that wrote it.

Fields: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``request_id``
(when there is one), ``exc`` (a formatted traceback) and anything passed in
``extra=``. Callers keep secrets out of messages and extras; this formatter
never adds request bodies, headers or query strings.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from config.request_id import get_request_id

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# Extras never written: Django's ``request`` (its repr carries the query string), the socket it came in on,
# and uvicorn's copy of the message with terminal colours.
_SKIPPED = frozenset({"request", "server_time", "color_message"})
_PLAIN = (str, int, float, bool, type(None), dict, list, tuple)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or get_request_id()
        if request_id:
            line["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key in _STANDARD or key in _SKIPPED or key in line or key.startswith("_"):
                continue
            if isinstance(value, _PLAIN):  # other objects' str() could say more than their caller meant
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)
