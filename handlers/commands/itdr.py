"""The `/itdr` slash command."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from handlers.router import parse_command, render


async def handle_itdr_command(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, catalog: Any) -> None:
    """Handles `/itdr …`: ack at once, then answer ephemerally through the response_url."""
    await ack()
    request, note = parse_command(command.get("text"))
    message = render(catalog, request, note=note)
    await respond(**message.to_response())
