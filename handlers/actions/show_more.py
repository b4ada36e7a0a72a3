"""The "Show more" button of paged answers (diff)."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from handlers.payloads import AnswerRequest
from handlers.router import render


async def handle_show_more_action(ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, catalog: Any) -> None:
    """Handles "Show more": posts the next page as a new ephemeral message, earlier pages stay readable."""
    await ack()
    request = AnswerRequest.from_value(action.get("value"))
    await respond(**render(catalog, request).to_response())
