"""Structured logging on the standard library.

Call sites log an event name plus key/value fields
(`log.info("callout.stored", extra=fields(...))`); the formatter prints them as one JSON
object per line or as `event key=value ...` text. Values that look like credentials are
masked here as a last line of defence; the first is never passing secrets to a logger.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_FIELDS_ATTR = "zs_fields"
_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|authorization|credential)", re.IGNORECASE)
_BASIC_OR_BEARER = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9+/=._~-]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def fields(**values: Any) -> dict[str, Any]:
    """Wrap key/value pairs for `extra=` so they reach the formatter under one attribute."""
    return {_FIELDS_ATTR: values}


def redact(text: str) -> str:
    """Mask credentials that may hide inside free text (headers, URLs)."""
    # Cheap substring tests first: most values (ids, names) cannot hold a credential, and
    # busy services (the webhook logs a line per callout) should not pay for two regexes.
    lowered = text.lower()
    if "basic" in lowered or "bearer" in lowered:
        text = _BASIC_OR_BEARER.sub(lambda m: f"{m.group(1)} ***", text)
    if "://" in text and "@" in text:
        text = _URL_PASSWORD.sub(r"\1***@", text)
    return text


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def _clean(key: str, value: Any) -> Any:
    if _secret_key(key):
        return "***"
    if isinstance(value, str):
        return redact(value)
    return value


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: _clean(k, v) for k, v in getattr(record, _FIELDS_ATTR, {}).items()}
        message = redact(record.getMessage())
        if self.as_json:
            doc: dict[str, Any] = {
                "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                    timespec="milliseconds"
                ),
                "level": record.levelname.lower(),
                "logger": record.name,
                "event": message,
                **extra,
            }
            if record.exc_info:
                doc["exc"] = redact(self.formatException(record.exc_info))
            return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        pairs = " ".join(f"{k}={v}" for k, v in extra.items())
        line = f"{record.levelname.lower():7} {record.name}: {message}" + (
            f" {pairs}" if pairs else ""
        )
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def one_line(record: logging.LogRecord) -> str:
    """`event key=value ...` for a record, secrets masked (for handlers of other systems)."""
    extra = {k: _clean(k, v) for k, v in getattr(record, _FIELDS_ATTR, {}).items()}
    pairs = " ".join(f"{k}={v}" for k, v in extra.items())
    return redact(f"{record.getMessage()} {pairs}".strip())


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (test captures and daemons swap it)."""

    zs_handler = True

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Install the formatter on the root logger once per process (idempotent)."""
    # The logging HOWTO's "Optimization" switches: our formatter prints none of this, and
    # collecting it (a stack walk for the caller, thread and process lookups) costs more
    # than formatting the line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "zs_handler", False):
            handler.setFormatter(_Formatter(fmt == "json"))
            root.setLevel(level)
            return
    handler = _StderrHandler()
    handler.setFormatter(_Formatter(fmt == "json"))
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter that would otherwise drown the events we emit ourselves.
    for noisy in ("httpx", "httpcore", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
