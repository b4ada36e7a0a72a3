"""HTTP mode: an ASGI app (`POST /slack/events`, `GET /healthz`) served by uvicorn.

`POST /slack/events` takes slash commands, interactivity and Events API requests alike; `bot.http_guard`
refuses bodies over 1 MiB (413), bad signatures or timestamps more than 5 minutes off (401) and malformed
bodies (400) before Bolt, whose own signature check still runs, sees the request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import uvicorn
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.app import Mode, build_app, check_settings
from bot.http_guard import slack_events_endpoint
from bot.settings import Settings
from bot.store import Store, open_store

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def create_asgi_app(
    app: AsyncApp, store: Store, *, on_shutdown: list[Callable[[], Awaitable[None] | None]] | None = None
) -> Starlette:
    """Wrap a Bolt app for ASGI. Shutdown closes the store (in the server's own event loop)."""
    slack_events = slack_events_endpoint(app)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "redis": "up" if await store.ping() else "down"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        shared = getattr(app, "shared_session", None)
        if shared is not None:
            await shared.close()
        for callback in on_shutdown or []:
            result = callback()
            if result is not None:
                await result
        await store.aclose()

    return Starlette(
        routes=[Route(EVENTS_PATH, slack_events, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])],
        lifespan=lifespan,
    )


def build_http_asgi(settings: Settings) -> tuple[Starlette, Callable[[], None]]:
    """Everything HTTP mode needs from settings: store (embedded Redis when REDIS_URL is empty), app, ASGI."""
    check_settings(settings, Mode.HTTP)
    store, embedded = open_store(settings.redis_url, settings.redis_prefix)
    app = build_app(settings, mode=Mode.HTTP, store=store)
    return create_asgi_app(app, store), (embedded.close if embedded else (lambda: None))


def serve(settings: Settings, *, host: str = "0.0.0.0") -> int:
    """Run HTTP mode in the foreground until interrupted (`itdr serve`)."""
    asgi, cleanup = build_http_asgi(settings)
    log.info("itdr-bot HTTP mode on %s:%d%s", host, settings.port, EVENTS_PATH)
    try:
        uvicorn.run(
            asgi,
            host=host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            access_log=False,
            lifespan="on",
            proxy_headers=True,
            forwarded_allow_ips="*",
            log_config=None,
        )
    finally:
        cleanup()
    return 0
