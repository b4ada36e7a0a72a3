"""Socket Mode: the same Bolt app over a WebSocket opened with the app-level token (`itdr socket`).

No public URL and no signing secret: the app calls `apps.connections.open` (on SLACK_API_URL) with
SLACK_APP_TOKEN and receives envelopes it acks over the socket. Slack's retries arrive with
`retry_attempt`, which Bolt maps to `x-slack-retry-num`, so the same dedup middleware applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

from bot.app import Mode, build_app, check_settings
from bot.settings import Settings
from bot.store import open_store

log = logging.getLogger(__name__)


def socket_handler(app: AsyncApp, app_token: str) -> AsyncSocketModeHandler:
    """The aiohttp Socket Mode handler for `app`; its Web API calls go to the app's client (SLACK_API_URL)."""
    return AsyncSocketModeHandler(app, app_token=app_token)


async def run_socket_mode(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Connect and serve until `stop` is set (or forever)."""
    check_settings(settings, Mode.SOCKET)
    store, embedded = open_store(settings.redis_url, settings.redis_prefix)
    try:
        app = build_app(settings, mode=Mode.SOCKET, store=store)
        assert settings.slack_app_token is not None
        handler = socket_handler(app, settings.slack_app_token.get_secret_value())
        await handler.connect_async()
        log.info("itdr-bot Socket Mode connected")
        try:
            await (stop.wait() if stop is not None else asyncio.Event().wait())
        finally:
            await handler.close_async()
            await app.shared_session.close()  # type: ignore[attr-defined]
    finally:
        await store.aclose()
        if embedded is not None:
            embedded.close()


def run(settings: Settings) -> int:
    """`itdr socket` in the foreground until interrupted."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_socket_mode(settings))
    return 0
