"""Answer buttons: did-you-mean suggestions, search results' "Why?", revision diffs and "Show more"."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from catalog import Catalog
from handlers.payloads import AnswerRequest
from handlers.router import render


async def handle_ask_action(ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, catalog: Catalog) -> None:
    """Handles an answer button: one click, one new ephemeral answer (the question stays visible)."""
    await ack()
    request = AnswerRequest.from_value(action.get("value"))
    await respond(**render(catalog, request).to_response())
