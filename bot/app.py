"""The `AsyncApp` factory: one Bolt app built from settings for each way of running (HTTP, Socket Mode,
console), with no module-global app.

This module is the composition root of the Slack surface: it builds the Slack Web API client, puts the
catalog and the Redis store into every request's context, and hands the app to `handlers.register`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import aiohttp
from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.context.respond.internals import _build_message
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient, WebhookResponse

from bot.logging import register_secrets
from bot.settings import Settings
from bot.store import Store

log = logging.getLogger(__name__)

Register = Callable[[AsyncApp], None]


class Mode(StrEnum):
    HTTP = "http"
    SOCKET = "socket"
    CONSOLE = "console"


class ConfigError(Exception):
    """A missing or malformed setting; str(exc) is one line naming the environment variable."""


_REQUIRED: dict[Mode, tuple[str, ...]] = {
    Mode.HTTP: ("slack_bot_token", "slack_signing_secret"),
    Mode.SOCKET: ("slack_bot_token", "slack_app_token"),
    Mode.CONSOLE: (),
}
_PREFIXES = {"slack_bot_token": "xoxb-", "slack_app_token": "xapp-"}


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; a validation failure becomes a one-line ConfigError.

    The error names the variable and the rule it broke, never the value (it may be a secret).
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        name = str(first["loc"][0]).upper() if first.get("loc") else "settings"
        raise ConfigError(f"{name} is malformed: {first['msg']}") from None


def check_settings(settings: Settings, mode: Mode) -> None:
    """Fail fast, with one line naming the variable, when `mode` lacks a setting it needs."""
    modes = {Mode.HTTP: "`itdr serve` (HTTP mode)", Mode.SOCKET: "`itdr socket` (Socket Mode)"}
    for field in _REQUIRED[mode]:
        secret = getattr(settings, field)
        value = secret.get_secret_value().strip() if secret is not None else ""
        if not value:
            raise ConfigError(f"{field.upper()} is not set; it is required for {modes[mode]}")
        prefix = _PREFIXES.get(field)
        if prefix and not value.startswith(prefix):
            raise ConfigError(f"{field.upper()} is malformed: it must start with {prefix!r}")
    if not settings.slack_api_url.startswith(("http://", "https://")):
        raise ConfigError("SLACK_API_URL is malformed: it must be an http(s) URL ending in '/'")
    if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL is malformed: it must start with redis://, rediss:// or unix://")
    register_secrets(
        s.get_secret_value()
        for s in (settings.slack_bot_token, settings.slack_signing_secret, settings.slack_app_token)
        if s is not None
    )


def build_client(settings: Settings, *, token: str | None = None) -> AsyncWebClient:
    """Web API client for SLACK_API_URL; retries connection errors and 429s (honouring Retry-After)."""
    bot_token = token or (settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None)
    return AsyncWebClient(
        token=bot_token,
        base_url=settings.slack_api_url,
        timeout=10,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        ],
    )


class SharedSession:
    """One keep-alive aiohttp session per event loop for response_url posts.

    Bolt's own `respond()` opens a new session (and TCP connection) for every answer; under load that is
    most of an answer's cost. Created lazily inside the serving loop, closed by the server's shutdown.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


class PooledRespond(AsyncRespond):
    """Bolt's `respond()` (same arguments, same message building) over the shared keep-alive session."""

    def __init__(self, *, response_url: str, session: SharedSession) -> None:
        super().__init__(response_url=response_url)
        self._shared = session

    async def __call__(self, text: str | dict = "", **kwargs: Any) -> WebhookResponse:  # type: ignore[override]
        assert self.response_url is not None
        client = AsyncWebhookClient(url=self.response_url, session=self._shared.get())
        message = _build_message(**text) if isinstance(text, dict) else _build_message(text=text, **kwargs)
        return await client.send_dict(message)


def build_readiness(settings: Settings, catalog: Any, store: Store) -> Any:
    """The tenant readiness service, caching results in the bot's Redis (imported only when configured)."""
    from bot.readiness.service import ReadinessService, StoreCache

    return ReadinessService(settings, catalog, cache=StoreCache(store))


def _default_register(app: AsyncApp) -> None:
    import handlers  # composition root: the only place bot/ reaches for the listeners

    handlers.register(app)


def build_app(
    settings: Settings,
    *,
    mode: Mode,
    store: Store,
    client: AsyncWebClient | None = None,
    catalog_loader: Callable[[], Any] | None = None,
    register: Register | None = None,
    session: SharedSession | None = None,
    readiness: Any | None = None,
) -> AsyncApp:
    """Build the Bolt app for `mode`. Settings must already have passed `check_settings`.

    HTTP mode verifies request signatures; Socket Mode and console requests arrive as `socket_mode`
    requests, which carry no signature (Bolt skips verification for them by design).
    """
    if catalog_loader is None:
        from catalog import load_catalog

        catalog_loader = load_catalog
    catalog = catalog_loader()  # load (and validate) the catalog at start, never on a request's clock

    signing_secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    app = AsyncApp(
        name="itdr-bot",
        client=client or build_client(settings),
        signing_secret=signing_secret,
        request_verification_enabled=mode is Mode.HTTP,
        raise_error_for_unhandled_request=True,  # unknown buttons get a notice, never a 404
        logger=logging.getLogger("itdr.bolt"),
    )

    if readiness is None and settings.itdr_client_id:
        readiness = build_readiness(settings, catalog, store)
    app.readiness = readiness  # type: ignore[attr-defined]  # None: /itdr check explains how to configure it
    shared = session or SharedSession()
    app.shared_session = shared  # type: ignore[attr-defined]  # closed by the server/console on shutdown

    async def inject_dependencies(context: dict, next_: Callable[[], Awaitable[None]]) -> None:
        context["store"] = store
        context["catalog"] = catalog
        context["readiness"] = readiness
        context["run_mode"] = mode
        if context.get("response_url"):
            context["respond"] = PooledRespond(response_url=context["response_url"], session=shared)
        await next_()

    app.use(inject_dependencies)
    (register or _default_register)(app)
    return app
