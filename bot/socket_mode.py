"""Socket Mode: the same Bolt app over a WebSocket opened with the app-level token (`itdr socket`).

No public URL and no signing secret: the app calls `apps.connections.open` (on SLACK_API_URL) with
SLACK_APP_TOKEN and receives envelopes it acks over the socket. Slack's retries arrive with
`retry_attempt`, which Bolt maps to `x-slack-retry-num`, so the same dedup middleware applies.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot import metrics
from bot.app import build_app
from bot.logging import request_id
from bot.runtime import Runtime
from bot.settings import Mode, Settings
from bot.signals import run_until_signalled

log = logging.getLogger(__name__)


class SocketModeMetrics(AsyncMiddleware):
    """What `itdr serve` counts at its HTTP endpoint, for envelopes: requests by kind and outcome, the time to the
    ack, and a request id on every log line of the envelope's handling."""

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse | None:
        kind = metrics.slack_kind(req.body)
        started = time.perf_counter()
        token = request_id.set(uuid.uuid4().hex[:16])
        outcome = "error"
        try:
            response = await next()
            outcome = "ok" if response is None or response.status < 400 else (
                "rejected" if response.status < 500 else "error")
        finally:
            request_id.reset(token)
            metrics.SLACK_REQUESTS.labels(kind=kind, outcome=outcome).inc()
            metrics.ACK_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)
        return None  # as a function middleware returns: Bolt passes the response so far on


async def run_socket_mode(settings: Settings, *, stop: asyncio.Event) -> None:
    """Connect and serve until `stop` is set."""
    async with Runtime.open(settings, Mode.SOCKET) as runtime:
        app = build_app(runtime)
        app.use(SocketModeMetrics())
        handler = AsyncSocketModeHandler(app, app_token=settings.secret("slack_app_token"))
        await handler.connect_async()
        log.info("itdr-bot Socket Mode connected")
        try:
            await stop.wait()
        finally:
            await handler.close_async()


def run(settings: Settings) -> int:
    """`itdr socket` in the foreground until SIGINT or SIGTERM."""
    return run_until_signalled(lambda stop: run_socket_mode(settings, stop=stop))
