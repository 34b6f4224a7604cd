"""Process logging, configured once from the settings: readable text, or one JSON object a line.

`TOWERFLOW_LOG_FORMAT=json` is for log shippers (Loki, Elasticsearch, Cloud Logging): each record
is `{"time", "level", "logger", "message", ...}` with the `request_id` of the HTTP request it
was logged in (the gateway sets `REQUEST_ID` per request) and the traceback as `exception`.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

#: The id of the request being handled (the gateway's middleware sets it); None outside one.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Servers that install their own handlers; their records go through the root handler instead.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current `REQUEST_ID` (`record.request_id`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(log_format: Literal["text", "json"], level: int = logging.INFO, stream=None) -> logging.Handler:
    """Route every log record of this process through one handler in `log_format`, writing to
    `stream` (default: stdout, where a container's log collector reads and where uvicorn writes
    its access log); returns the handler."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _SERVER_LOGGERS:
        server = logging.getLogger(name)
        server.handlers.clear()
        server.propagate = True
    return handler
