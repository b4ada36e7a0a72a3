"""The "Re-check" button of a readiness report."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.consent.service import ConsentService
from bot.readiness.service import ReadinessService
from catalog import Catalog
from handlers.payloads import AnswerRequest
from handlers.router import answer


async def handle_recheck_action(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, catalog: Catalog,
    readiness: ReadinessService | None, consent: ConsentService,
) -> None:
    """Handles "Re-check": asks Microsoft again (bypassing the cache) and replaces the report in place."""
    await ack()
    request = AnswerRequest.from_value(action.get("value"))
    message = await answer(catalog, readiness, request, fresh=True, start_consent=consent.configured)
    await respond(**message.to_response(replace_original=True))
