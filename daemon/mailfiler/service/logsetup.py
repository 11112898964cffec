"""Logging to stderr: plain lines for people, one JSON object a line for
machines.  Events carry a name (``tracked``, ``relinked``, ``shunted``...)
and structured fields passed through ``extra=``."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

#: LogRecord attributes that are not user fields
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            if key != "event":
                out[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        event = getattr(record, "event", None)
        return f"{line} [{event}]" if event else line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, so that the backfill
    progress bar (which redirects stderr) prints log lines above itself."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(fmt: str = "plain", level: str = "info") -> None:
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # peewee logs every query at DEBUG; keep it out unless asked for
    logging.getLogger("peewee").setLevel(logging.WARNING if level.lower() != "debug" else logging.DEBUG)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    # httpx logs every request at INFO (a Graph or DAV URL per poll, delta and sync tokens in it);
    # msal logs its token requests: both are kept for --log-level debug
    for noisy in ("httpx", "httpcore", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level.lower() != "debug" else logging.DEBUG)
