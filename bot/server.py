"""HTTP mode: an ASGI app (`POST /slack/events`, `GET /healthz`, `/readyz`, `/metrics`) served by uvicorn
(`itdr serve`).

`POST /slack/events` takes slash commands, interactivity and Events API requests alike; `bot.http_guard`
refuses bodies over 1 MiB (413), bad signatures or timestamps more than 5 minutes off (401) and malformed
bodies (400) before Bolt, whose own signature check still runs, sees the request.

The Runtime is opened by the ASGI lifespan, inside uvicorn's event loop, and closed when uvicorn stops (SIGINT or
SIGTERM), so Redis connections, the HTTP session and an embedded Redis never outlive the server.
"""

from __future__ import annotations

import contextlib
import gc
import html
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from bot import metrics
from bot.app import Register, build_app
from bot.consent.model import ConsentState
from bot.consent.service import BadSignature, StateReset, UnknownRequest
from bot.http_guard import Endpoint, slack_events_endpoint
from bot.logging import request_id
from bot.probes import ReadinessProbe
from bot.runtime import Runtime
from bot.settings import Mode, Settings
from bot.store import StateUnavailable
from catalog.words import counted
from handlers.cards import update_card
from handlers.plans import mark_consented

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
CALLBACK_PATH = "/consent/callback"


def create_asgi_app(
    settings: Settings, *, register: Register | None = None, freeze_heap: bool = False, **runtime_options: Any
) -> Starlette:
    """The ASGI app for `settings`; `register` and `runtime_options` (see `Runtime.open`) are for tests.

    `freeze_heap` (what `itdr serve` does): see `frozen_startup_heap`.
    """

    async def slack_events(request: Request) -> Response:
        endpoint: Endpoint = request.app.state.endpoint
        started = time.perf_counter()
        # Every line logged for this request (and by the work it leaves running) carries this id.
        token = request_id.set(uuid.uuid4().hex[:16])
        try:
            response = await endpoint(request)
        finally:
            request_id.reset(token)
        kind = getattr(request.state, "slack_kind", "unknown")  # set once the request is verified and parsed
        outcome = "ok" if response.status_code < 400 else "rejected" if response.status_code < 500 else "error"
        metrics.SLACK_REQUESTS.labels(kind=kind, outcome=outcome).inc()
        metrics.ACK_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)
        return response

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    async def readyz(request: Request) -> JSONResponse:
        ready, reason = await request.app.state.readiness_probe.check()
        body = {"ready": ready, "reason": reason} if reason else {"ready": ready}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def healthz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        return JSONResponse({"ok": True, "redis": "up" if await runtime.cache.ping() else "down"})

    @contextlib.asynccontextmanager
    async def lifespan(asgi: Starlette) -> AsyncIterator[None]:
        async with Runtime.open(settings, Mode.HTTP, **runtime_options) as runtime:
            app = build_app(runtime, register=register)
            asgi.state.runtime = runtime
            asgi.state.readiness_probe = ReadinessProbe(runtime)
            asgi.state.bolt = app
            asgi.state.endpoint = slack_events_endpoint(app, signing_secret=settings.secret("slack_signing_secret"))
            with frozen_startup_heap() if freeze_heap else contextlib.nullcontext():
                yield

    async def consent_callback(request: Request) -> HTMLResponse:
        runtime: Runtime = request.app.state.runtime
        return await admin_consent_callback(runtime, request.query_params)

    return Starlette(
        routes=[
            Route(EVENTS_PATH, slack_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route(CALLBACK_PATH, consent_callback, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def page(status: int, title: str, *paragraphs: str, link: str | None = None) -> HTMLResponse:
    """A plain page for the person Microsoft sent back to us (everything escaped)."""
    body = "".join(f"<p>{html.escape(text)}</p>" for text in paragraphs)
    if link:
        body += f'<p><a href="{html.escape(link, quote=True)}">Back to Slack</a></p>'
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family: sans-serif; max-width: 40em; margin: 3em auto'><h1>{html.escape(title)}</h1>"
        f"{body}</body></html>",
        status_code=status,
    )


async def admin_consent_callback(runtime: Runtime, query: Mapping[str, str]) -> HTMLResponse:
    """Microsoft's redirect after an admin's decision on the consent link: check the signed state and the request,
    record what the redirect claims, verify with a fresh check, and update the card.

    `error` is read first (Microsoft's declined redirect carries `error`, `error_description` and `state`, no
    `tenant`; an error redirect may also carry admin_consent=True). A redirect without an error only says the admin
    came back: anyone holding the link can call it, so only the fresh check records `verified`."""
    consent = runtime.consent
    error = query.get("error")
    try:
        outcome = await consent.callback(query.get("state"), query.get("tenant"), error,
                                         query.get("error_description"))
    except BadSignature:
        return page(400, "This consent link is not valid", "It was not issued by itdr-bot. Nothing was changed.")
    except StateReset as exc:
        return page(410, "This consent request is gone", str(exc))
    except UnknownRequest:
        return page(410, "This consent request no longer exists",
                    "It was closed more than 30 days ago. Ask again with /itdr consent in Slack.")
    except StateUnavailable as exc:
        return page(503, "Consent could not be recorded", str(exc))
    request = outcome.request
    back = runtime.settings.slack_web_url(f"app_redirect?channel={request.channel}")
    if outcome.changed:
        await update_card(runtime.slack, consent, request)
    if outcome.refusal:
        return page(400, "This consent callback was refused", outcome.refusal, "Nothing was changed.", link=back)
    if error:
        return page(200, "Consent was not granted", f"Microsoft said: {request.last_error}",
                    "The request's card in Slack says so and offers the link again for another try.", link=back)
    verification = await consent.verify(request.id, "admin-consent callback")
    await update_card(runtime.slack, consent, verification.outcome.request)
    await mark_consented(runtime.slack, runtime.fixes, verification)
    checked = verification.outcome.request
    if checked.state is ConsentState.verified:
        return page(200, "Consent granted and verified",
                    f"{checked.tenant.label} now grants everything {checked.version} asks for "
                    f"(verdict: {checked.verdict}). The card in Slack shows it.", link=back)
    return page(200, "Consent not verified yet",
                f"You came back from Microsoft, but a fresh check of {checked.tenant.label} still misses "
                f"{counted(len(checked.still_missing), 'item')}. New grants can take a few minutes to show: use "
                "Verify now on the card in Slack.", link=back)


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
