"""The "Share in channel" button."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.consent.service import ConsentService
from bot.readiness.service import ReadinessService
from bot.store import CLICK_TTL_SECONDS, Cache, digest
from catalog import Catalog
from handlers.blocks.answers import notice_message
from handlers.payloads import AnswerRequest
from handlers.router import answer


async def handle_share_action(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    catalog: Catalog,
    cache: Cache,
    readiness: ReadinessService | None,
    consent: ConsentService,
) -> None:
    """Handles "Share in channel": reposts the same answer visibly, once per answer even on double clicks."""
    await ack()
    request = AnswerRequest.from_value(action.get("value"))
    user = (body.get("user") or {}).get("id", "")
    channel = (body.get("channel") or {}).get("id", "")
    message_ts = (body.get("container") or {}).get("message_ts", "")
    key = digest(user, channel, message_ts, request.to_value())
    if not await cache.claim("share", key, ttl=CLICK_TTL_SECONDS):
        await respond(**notice_message("Already shared in this channel.").to_response())
        return
    try:
        message = await answer(catalog, readiness, request, shared_by=user or None,
                               start_consent=consent.configured)
        await respond(**message.to_response(response_type="in_channel"))
    except Exception:
        await cache.release("share", key)  # nothing was posted: a new click may try again
        raise
