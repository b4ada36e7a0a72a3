"""The `POST /slack/events` endpoint: size limit, Slack signature and body shape checked before Bolt runs.

Order for every request, each step answering on its own so nothing malformed reaches the next:

1. size: more than `MAX_BODY_BYTES` → 413, on `Content-Length` before reading anything, otherwise while
   streaming (a chunked body is cut off at the first byte over the limit, never buffered whole);
2. signature: `X-Slack-Request-Timestamp` an integer within 300 s of now and `X-Slack-Signature` equal to
   `v0=` + HMAC-SHA256(signing secret, `v0:{timestamp}:{raw body}`), else 401 `{"error": "invalid request"}`;
3. shape: UTF-8, and a JSON object (raw JSON, or the `payload` field of a form) or a form, else 400;
4. Bolt: `AsyncApp.async_dispatch`, whose own signature check stays enabled and passes for what gets here.

No step logs the request body: a rejection is one short line (reason and length), at most one per reason
every `LOG_INTERVAL_SECONDS`. Where Bolt itself logs bodies:
- its signature check logs the whole body on failure: never reached by a rejected request, and its line is
  stripped of the body here too, for the one case that could still get there (a timestamp crossing the
  300 s edge between our check and Bolt's);
- its "unhandled request" warnings: not used, the app raises instead (`raise_error_for_unhandled_request`)
  and `handlers.errors` logs only a short prefix of the payload's `type`;
- at DEBUG it logs the response it sends (never the request) and slack_sdk the calls the app makes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final
from urllib.parse import parse_qsl

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from bot import metrics

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1024 * 1024
MAX_CLOCK_SKEW_SECONDS: Final = 300
LOG_INTERVAL_SECONDS: Final = 10.0
_MAX_TIMESTAMP_DIGITS: Final = 12

Endpoint = Callable[[Request], Awaitable[Response]]

# Errors AsyncBoltRequest raises while parsing a malformed body (json.JSONDecodeError is a ValueError;
# a JSON value that is not an object fails in Bolt's context builder with AttributeError or TypeError).
_PARSE_ERRORS: Final = (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError)


class Rejection(Exception):
    """A request refused before Bolt: the status, a short reason for the log and a JSON body for the client."""

    def __init__(self, status: int, reason: str, body: dict[str, str]) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.body = body


def _too_large() -> Rejection:
    return Rejection(413, "body over the size limit", {"error": "request too large"})


def _unauthorized(reason: str) -> Rejection:
    return Rejection(401, reason, {"error": "invalid request"})  # the body Bolt's own check answers with


def _malformed(reason: str) -> Rejection:
    return Rejection(400, reason, {"error": "malformed request", "reason": reason})


class RejectionLog:
    """One short warning per rejection reason and interval; later ones are counted into the next line."""

    def __init__(
        self,
        logger: logging.Logger = log,
        *,
        interval: float = LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, rejection: Rejection, length: str) -> None:
        now = self._clock()
        last = self._last.get(rejection.reason)
        if last is not None and now - last < self._interval:
            self._suppressed[rejection.reason] = self._suppressed.get(rejection.reason, 0) + 1
            return
        self._last[rejection.reason] = now
        more = self._suppressed.pop(rejection.reason, 0)
        self._logger.warning(
            "Slack request rejected with %d: %s (%s bytes)%s",
            rejection.status,
            rejection.reason,
            length,
            f"; {more} more since the last such line" if more else "",
        )


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, or Rejection(413) as soon as it is known to exceed `limit` bytes (never holding more)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise _malformed("Content-Length is not a number")
        if int(declared) > limit:
            raise _too_large()
    body = bytearray()
    async with contextlib.aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            if len(body) + len(chunk) > limit:
                raise _too_large()
            body += chunk
    return bytes(body)


def verify_signature(headers: Headers, body: bytes, secret: bytes, *, now: float) -> None:
    """Slack's v0 request signature over the raw bytes; Rejection(401) when it does not hold."""
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if not timestamp:
        raise _unauthorized("no timestamp")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        raise _unauthorized("timestamp is not an integer")
    if abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        raise _unauthorized("timestamp outside the 5-minute window")
    if not signature:
        raise _unauthorized("no signature")
    digest = hmac.new(secret, b"v0:" + timestamp.encode("ascii") + b":" + body, hashlib.sha256).hexdigest()
    # Starlette decodes header values as latin-1, so this round-trips whatever bytes the client sent.
    if not hmac.compare_digest(("v0=" + digest).encode("ascii"), signature.encode("latin-1")):
        raise _unauthorized("signature does not match")


def to_bolt_request(request: Request, body: bytes) -> AsyncBoltRequest:
    """What Bolt's Starlette adapter builds (raw body as text, query, headers), for a verified body.

    Rejection(400) when the body is not UTF-8 or Bolt cannot read it as one Slack payload (a JSON object,
    a form, or a form whose `payload` is a JSON object).
    """
    if not body:
        raise _malformed("empty body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("body is not UTF-8") from None
    # Every value of every header, as lists (Bolt reads the first), in one pass over the raw list (`items()` keeps
    # repeated headers); the query string as sent, without building a URL.
    grouped: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        grouped.setdefault(name, []).append(value)
    headers: dict[str, str | Sequence[str]] = dict(grouped)
    query = request.scope.get("query_string", b"").decode("latin-1")
    try:
        bolt_request = AsyncBoltRequest(body=text, query=query, headers=headers)
    except json.JSONDecodeError:
        raise _malformed("body is not valid JSON") from None
    except _PARSE_ERRORS:
        raise _malformed("body is not a Slack payload (a JSON object or a form)") from None
    if not isinstance(bolt_request.body, dict):
        raise _malformed("body is not a Slack payload (a JSON object or a form)")
    if not bolt_request.body and "payload" in text and not text.lstrip().startswith("{"):
        # Bolt reads any form that merely mentions "payload" (`/itdr search payload`) as interactivity and finds
        # nothing; a form without a payload field is a slash command: read it as one.
        form = dict(parse_qsl(text, keep_blank_values=True))
        if form and "payload" not in form:
            bolt_request.body = form
            bolt_request.context = build_async_context(AsyncBoltContext(), form)
    return bolt_request


def to_starlette_response(bolt_response: BoltResponse) -> Response:
    """Status, every header value (repeated headers such as Set-Cookie included) and body of Bolt's answer."""
    response = Response(content=bolt_response.body.encode("utf-8"), status_code=bolt_response.status)
    for name, values in bolt_response.headers.items():
        if name.lower() == "content-length":
            continue  # Starlette sets it from the body
        for value in values:
            response.headers.append(name, value)
    return response


class _BodylessSignatureLog(logging.Filter):
    """Bolt's signature check logs the whole body on failure; keep its line, drop the body."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Invalid request signature detected"):
            record.msg = "Invalid request signature detected (request body not logged)"
            record.args = None
        return True


def quiet_bolt_signature_log() -> None:
    """Install `_BodylessSignatureLog` on the logger of Bolt's RequestVerification middleware (idempotent)."""
    logger = logging.getLogger("slack_bolt.RequestVerification")
    if not any(isinstance(f, _BodylessSignatureLog) for f in logger.filters):
        logger.addFilter(_BodylessSignatureLog())


def _json_response(rejection: Rejection) -> Response:
    return Response(
        content=json.dumps(rejection.body).encode("utf-8"),
        status_code=rejection.status,
        media_type="application/json",
    )


def slack_events_endpoint(
    app: AsyncApp,
    *,
    signing_secret: str,
    max_body_bytes: int = MAX_BODY_BYTES,
    clock: Callable[[], float] = time.time,
    rejection_log: RejectionLog | None = None,
) -> Endpoint:
    """The Starlette endpoint for `POST /slack/events` in front of `app` (see the module docstring).

    An empty `signing_secret` is refused here rather than accepted later.
    """
    secret = signing_secret
    if not secret:
        raise ValueError("the Slack signing secret is empty; HTTP mode cannot verify requests without it")
    key = secret.encode("utf-8")
    note = rejection_log or RejectionLog()
    quiet_bolt_signature_log()

    async def slack_events(request: Request) -> Response:
        declared = request.headers.get("content-length") or ""
        length = declared if declared.isascii() and declared.isdigit() else "?"
        try:
            body = await read_body(request, max_body_bytes)
            length = str(len(body))
            verify_signature(request.headers, body, key, now=clock())
            bolt_request = to_bolt_request(request, body)
            request.state.slack_kind = metrics.slack_kind(bolt_request.body)  # for the server's metrics
        except Rejection as rejection:
            if rejection.status == 413 and length == "?":
                length = f"over {max_body_bytes}"
            note(rejection, length)
            return _json_response(rejection)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        return to_starlette_response(await app.async_dispatch(bolt_request))

    return slack_events

