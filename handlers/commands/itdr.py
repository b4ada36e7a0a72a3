"""The `/itdr` slash command."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.consent.service import ConsentService
from bot.drift.service import DriftService
from bot.readiness.fix_service import FixService
from bot.readiness.service import ReadinessService
from catalog import Catalog
from handlers.blocks.answers import notice_message
from handlers.commands.consent import request_consent, show_audit
from handlers.commands.fix import post_plan
from handlers.commands.watch import fleet, unwatch, watch, watching
from handlers.ids import SubCommand
from handlers.router import answer_check, parse_command, prepare_check, render_command


async def handle_itdr_command(
    ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient, catalog: Catalog,
    readiness: ReadinessService | None, consent: ConsentService, drift: DriftService, fixes: FixService,
) -> None:
    """Handles `/itdr …`. Catalog answers ride on the ack itself (one exchange with Slack); a check acks
    "Checking…" and answers through the response_url when Microsoft has."""
    request, note = parse_command(command.get("text"))
    if request.cmd is SubCommand.CONSENT:
        await request_consent(ack, respond, client, command, consent, readiness, request)
        return
    if request.cmd is SubCommand.FIX:
        await post_plan(ack, respond, client, command, readiness, fixes, request)
        return
    if request.cmd is SubCommand.AUDIT:
        await show_audit(ack, consent, request)
        return
    if request.cmd is SubCommand.WATCH:
        await watch(ack, respond, client, command, drift, readiness, request)
        return
    if request.cmd is SubCommand.UNWATCH:
        await unwatch(ack, command, drift, request)
        return
    if request.cmd is SubCommand.WATCHING:
        await watching(ack, command, drift)
        return
    if request.cmd is SubCommand.FLEET:
        await fleet(ack, drift)
        return
    if request.cmd is not SubCommand.CHECK:
        await ack(**render_command(catalog, request, note).to_ack())
        return
    check = prepare_check(readiness, request)
    if isinstance(check, str):  # bad input or no configuration: answered at once, nothing asked of Microsoft
        await ack(**notice_message(check).to_ack())
        return
    assert readiness is not None
    await ack(**notice_message(f":hourglass_flowing_sand: Checking `{check.tenant.value}`… (a few seconds)").to_ack())
    message = await answer_check(readiness, check, request, start_consent=consent.configured)
    await respond(**message.to_response())
