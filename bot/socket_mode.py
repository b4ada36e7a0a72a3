"""Socket Mode: the same Bolt app over a WebSocket opened with the app-level token (`itdr socket`).

No public URL and no signing secret: the app calls `apps.connections.open` (on SLACK_API_URL) with
SLACK_APP_TOKEN and receives envelopes it acks over the socket. Slack's retries arrive with
`retry_attempt`, which Bolt maps to `x-slack-retry-num`, so the same dedup middleware applies.
"""

from __future__ import annotations

import asyncio
import logging

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.app import build_app
from bot.runtime import Runtime
from bot.settings import Mode, Settings
from bot.signals import run_until_signalled

log = logging.getLogger(__name__)


async def run_socket_mode(settings: Settings, *, stop: asyncio.Event) -> None:
    """Connect and serve until `stop` is set."""
    async with Runtime.open(settings, Mode.SOCKET) as runtime:
        handler = AsyncSocketModeHandler(build_app(runtime), app_token=settings.secret("slack_app_token"))
        await handler.connect_async()
        log.info("itdr-bot Socket Mode connected")
        try:
            await stop.wait()
        finally:
            await handler.close_async()


def run(settings: Settings) -> int:
    """`itdr socket` in the foreground until SIGINT or SIGTERM."""
    return run_until_signalled(lambda stop: run_socket_mode(settings, stop=stop))
