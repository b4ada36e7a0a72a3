"""HTTP mode: an ASGI app (`POST /slack/events`, `GET /healthz`) served by uvicorn (`itdr serve`).

`POST /slack/events` takes slash commands, interactivity and Events API requests alike; `bot.http_guard`
refuses bodies over 1 MiB (413), bad signatures or timestamps more than 5 minutes off (401) and malformed
bodies (400) before Bolt, whose own signature check still runs, sees the request.

The Runtime is opened by the ASGI lifespan, inside uvicorn's event loop, and closed when uvicorn stops (SIGINT or
SIGTERM), so Redis connections, the HTTP session and an embedded Redis never outlive the server.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.app import Register, build_app
from bot.http_guard import Endpoint, slack_events_endpoint
from bot.runtime import Runtime
from bot.settings import Mode, Settings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def create_asgi_app(
    settings: Settings, *, register: Register | None = None, freeze_heap: bool = False, **runtime_options: Any
) -> Starlette:
    """The ASGI app for `settings`; `register` and `runtime_options` (see `Runtime.open`) are for tests.

    `freeze_heap` (what `itdr serve` does): see `frozen_startup_heap`.
    """

    async def slack_events(request: Request) -> Response:
        endpoint: Endpoint = request.app.state.endpoint
        return await endpoint(request)

    async def healthz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        return JSONResponse({"ok": True, "redis": "up" if await runtime.cache.ping() else "down"})

    @contextlib.asynccontextmanager
    async def lifespan(asgi: Starlette) -> AsyncIterator[None]:
        async with Runtime.open(settings, Mode.HTTP, **runtime_options) as runtime:
            app = build_app(runtime, register=register)
            asgi.state.runtime = runtime
            asgi.state.bolt = app
            asgi.state.endpoint = slack_events_endpoint(app, signing_secret=settings.secret("slack_signing_secret"))
            with frozen_startup_heap() if freeze_heap else contextlib.nullcontext():
                yield

    return Starlette(
        routes=[Route(EVENTS_PATH, slack_events, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])],
        lifespan=lifespan,
    )


@contextlib.contextmanager
def frozen_startup_heap() -> Iterator[None]:
    """Keep what start-up built (modules, the catalog, the Bolt app: some 100,000 objects that live as long as the
    server) out of the garbage collector's full passes while serving.

    Otherwise every full pass walks all of them while every request in flight waits: up to tens of milliseconds,
    several times a minute under load, which is most of the p99 (`gc.freeze`; garbage is collected first so none of
    it is kept). Process-wide, so only `itdr serve`, which owns its process, asks for it. Unfrozen on exit.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def serve(settings: Settings, *, host: str = "0.0.0.0") -> int:
    """Run HTTP mode in the foreground until SIGINT or SIGTERM (`itdr serve`)."""
    log.info("itdr-bot HTTP mode on %s:%d%s", host, settings.port, EVENTS_PATH)
    uvicorn.run(
        create_asgi_app(settings, freeze_heap=True),
        host=host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips="*",
        log_config=None,
    )
    return 0
