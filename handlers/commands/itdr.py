"""The `/itdr` slash command."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from handlers.blocks.answers import notice_message
from handlers.ids import SubCommand
from handlers.router import answer, check_problem, parse_command


async def handle_itdr_command(
    ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, catalog: Any, readiness: Any = None
) -> None:
    """Handles `/itdr …`: ack at once, then answer ephemerally through the response_url."""
    request, note = parse_command(command.get("text"))
    if request.cmd is SubCommand.CHECK:
        # A check takes seconds: the ack says so; bad input is answered like any other answer, changing nothing.
        problem = check_problem(catalog, readiness, request)
        if problem:
            await ack()
            await respond(**notice_message(problem).to_response())
            return
        await ack(**notice_message(f":hourglass_flowing_sand: Checking `{request.args[0]}`… (a few seconds)").to_ack())
    else:
        await ack()
    message = await answer(catalog, readiness, request, note=note)
    await respond(**message.to_response())
