"""The `AsyncApp` factory: one Bolt app built from a `Runtime` for each way of running (HTTP, Socket Mode,
console), with no module-global app.

This module is the composition root of the Slack surface: it puts the runtime's catalog, cache, state, readiness
and consent services into every request's context (listeners take them as typed arguments) and hands the app to
`handlers.register`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.models.attachments import Attachment
from slack_sdk.models.blocks import Block
from slack_sdk.webhook.async_client import AsyncWebhookClient, WebhookResponse

from bot.runtime import Runtime
from bot.settings import Mode

log = logging.getLogger(__name__)

Register = Callable[[AsyncApp], None]
BOLT_LOGGER = "itdr.bolt"


class _SameTokenNotice(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN itself and warns that it is unused next to our client; it is the same token."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


class PooledRespond(AsyncRespond):
    """Bolt's `respond()` (same arguments, same message building) over the runtime's keep-alive session.

    Bolt's own `respond()` opens a new session (and TCP connection) for every answer; under load that is most
    of an answer's cost.
    """

    def __init__(self, *, response_url: str, session: aiohttp.ClientSession) -> None:
        super().__init__(response_url=response_url)
        self._session = session

    async def __call__(
        self,
        text: str | dict[str, Any] = "",
        blocks: Sequence[dict[str, Any] | Block] | None = None,
        attachments: Sequence[dict[str, Any] | Attachment] | None = None,
        response_type: str | None = None,
        replace_original: bool | None = None,
        delete_original: bool | None = None,
        unfurl_links: bool | None = None,
        unfurl_media: bool | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WebhookResponse:
        assert self.response_url is not None
        client = AsyncWebhookClient(url=self.response_url, session=self._session)
        # slack_sdk's public webhook API builds the message (Bolt's own builder is private).
        if isinstance(text, dict):  # a whole message, as Bolt's respond() takes it
            return await client.send_dict(text)
        if thread_ts is not None:  # send() has no thread_ts; nothing here answers in a thread through respond()
            raise ValueError("respond() in a thread is not supported; post with chat.postMessage")
        return await client.send(
            text=text, blocks=blocks, attachments=attachments, response_type=response_type,
            replace_original=replace_original, delete_original=delete_original, unfurl_links=unfurl_links,
            unfurl_media=unfurl_media, metadata=metadata,
        )


class InjectRuntime(AsyncMiddleware):
    """Puts the runtime's catalog, cache, state and readiness and consent services into every request's context, and
    `respond` over the runtime's keep-alive session.

    A middleware object rather than a function: for a function middleware Bolt builds every injectable argument
    (about 30, clients and payload views among them) on every request: more than this does."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse | None:
        context, runtime = req.context, self.runtime
        context["catalog"] = runtime.catalog
        context["cache"] = runtime.cache
        context["state"] = runtime.state
        context["readiness"] = runtime.readiness
        context["consent"] = runtime.consent
        context["drift"] = runtime.drift
        context["fixes"] = runtime.fixes
        context["background"] = runtime.background
        if context.get("response_url"):
            context["respond"] = PooledRespond(response_url=context["response_url"], session=runtime.http)
        await next()
        return None  # as a function middleware returns: Bolt passes this on as the response so far


def _default_register(app: AsyncApp) -> None:
    import handlers  # composition root: the only place bot/ reaches for the listeners

    handlers.register(app)


def build_app(runtime: Runtime, *, register: Register | None = None) -> AsyncApp:
    """Build the Bolt app for the runtime's mode.

    HTTP mode verifies request signatures; Socket Mode and console requests arrive as `socket_mode` requests,
    which carry no signature (Bolt skips verification for them by design).
    """
    bolt_logger = logging.getLogger(BOLT_LOGGER)
    if not any(isinstance(f, _SameTokenNotice) for f in bolt_logger.filters):
        bolt_logger.addFilter(_SameTokenNotice())
    app = AsyncApp(
        name="itdr-bot",
        client=runtime.slack,
        signing_secret=runtime.settings.secret("slack_signing_secret"),
        request_verification_enabled=runtime.mode is Mode.HTTP,
        raise_error_for_unhandled_request=True,  # unknown buttons get a notice, never a 404
        # Listeners return once they have acked (handlers/acking.py), so Bolt answers at the ack, not after a poll.
        process_before_response=True,
        logger=bolt_logger,
    )

    app.use(InjectRuntime(runtime))
    (register or _default_register)(app)
    return app
