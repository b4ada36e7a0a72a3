"""Global middleware: drop deliveries Slack already sent (retries) before any listener runs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.store import DELIVERY_TTL_SECONDS, Cache
from handlers.ids import ACTING_SUB_COMMANDS

log = logging.getLogger(__name__)


def delivery_id(body: dict[str, Any]) -> str | None:
    """What identifies one delivery across Slack's retries: event_id for events, trigger_id otherwise; None for
    a slash command answered in its ack from what is stored (a catalog question, help, audit, watching, fleet):
    it changes nothing, and a repeated delivery is answered again, since the first answer may be what was lost."""
    if body.get("type") == "event_callback":
        return body.get("event_id")
    if "command" in body and _answered_in_ack(body.get("text")):
        return None
    return body.get("trigger_id") or None


def _answered_in_ack(text: str | None) -> bool:
    head = (text or "").split(maxsplit=1)[:1]
    return not head or head[0].lower() not in ACTING_SUB_COMMANDS


async def deduplicate_deliveries(
    body: dict[str, Any], request: AsyncBoltRequest, cache: Cache, next_: Callable[[], Awaitable[object]]
) -> BoltResponse | None:
    """SET NX EX on the delivery id: a second delivery (X-Slack-Retry-Num, or a Socket Mode retry) is acked
    with an empty 200 and runs nothing. With Redis down the claim fails open and the request proceeds."""
    key = delivery_id(body)
    if key and not await cache.claim("delivery", key, ttl=DELIVERY_TTL_SECONDS):
        retry = (request.headers.get("x-slack-retry-num") or ["?"])[0]
        log.info("duplicate delivery ignored (retry %s)", retry)
        return BoltResponse(status=200, body="")
    await next_()
    return None


class DeduplicateDeliveries(AsyncMiddleware):
    """`deduplicate_deliveries` as a Bolt middleware object, with the runtime's cache from the context.

    An object rather than a function: for a function middleware Bolt builds every injectable argument (about 30,
    clients and payload views among them) on every request."""

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse | None:
        return await deduplicate_deliveries(req.body, req, req.context["cache"], next)


def register(app: AsyncApp) -> None:
    app.use(DeduplicateDeliveries())
