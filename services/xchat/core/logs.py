"""Log format of every xchat process: plain text or JSON lines, with the request id of the call.

``configure`` is called once by the entry point (``xchat.cli``) with the format
and level from settings. Each gRPC call runs in its own task and context, and
``xchat.core.observe`` binds :data:`request_id` there, so every line a call
writes (its refusal in ``xchat.refused``, its access line in ``xchat.access``)
carries the id the client sent in ``x-request-id`` or one made up for it.
Nothing here writes a token, key or ciphertext: callers log methods, codes
and their own messages only.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_ID_KEY = "x-request-id"
# Bounded: a client's id is echoed in logs and trailers, so it may not be a payload.
MAX_REQUEST_ID = 64

request_id: ContextVar[str | None] = ContextVar("xchat_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``-`` outside a call) so any formatter can print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True


class TextFormatter(logging.Formatter):
    """The classic one-line text format; a line written inside a call ends with its request id."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{text} request_id={rid}" if rid and rid != "-" else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and fields passed as ``extra``."""

    STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid and rid != "-":
            line["request_id"] = rid
        # Structured fields a caller passed with extra={...}.
        for key, value in vars(record).items():
            if key not in self.STANDARD and not key.startswith("_"):
                line[key] = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"))


def configure(*, fmt: str = "text", level: int | str = logging.INFO) -> None:
    """Installs the one root handler (stderr) in ``fmt`` at ``level``."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: choose from {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


def clean_request_id(value: str | None) -> str | None:
    """The client's id when it is short and printable; None otherwise (a new one is made)."""
    if not value or len(value) > MAX_REQUEST_ID or not value.isprintable() or " " in value:
        return None
    return value
