"""`/itdr watch TENANT [#channel]`, `/itdr unwatch TENANT`, `/itdr watching` and `/itdr fleet`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.drift.service import CannotWatch, DriftService
from bot.drift.store import WatchedTenant
from bot.microsoft.errors import InvalidTenant
from bot.microsoft.http import Priority
from bot.microsoft.tenant import parse_tenant
from bot.readiness.service import ReadinessService
from handlers.blocks.answers import notice_message
from handlers.blocks.drift import fleet_message, watch_answer, watch_confirmation, watching_message
from handlers.cards import NOT_IN_CHANNEL
from handlers.payloads import AnswerRequest, parse_channel
from handlers.router import prepare_check


async def watch(
    ack: AsyncAck, respond: AsyncRespond, client: AsyncWebClient, command: dict[str, Any], drift: DriftService,
    readiness: ReadinessService | None, request: AnswerRequest,
) -> None:
    """Subscribe a channel to a tenant: check it exists, prove the bot can post there, answer with its verdict."""
    channel = command["channel_id"]
    if len(request.args) == 2:
        target = parse_channel(request.args[1])
        if target is None:
            await ack(**notice_message("Name the channel as Slack links it (type `#` and pick it) or by its id "
                                       "(`C…`).").to_ack())
            return
        channel = target
    check = prepare_check(readiness, AnswerRequest(cmd=request.cmd, args=request.args[:1]))
    if isinstance(check, str):
        await ack(**notice_message(check).to_ack())
        return
    await ack(**notice_message(f":hourglass_flowing_sand: Checking `{check.tenant.value}` before watching it…")
              .to_ack())
    try:
        tenant_id = await drift.resolve(check)
    except CannotWatch as exc:
        await respond(**notice_message(str(exc)).to_response())
        return
    report = await drift.check(tenant_id, priority=Priority.HIGH, fresh=False)
    now = datetime.now(UTC)
    tenant = WatchedTenant(id=tenant_id, domain=report.tenant.domain, name=report.tenant.name,
                           added_by=command["user_id"], added_at=now)
    # Stored first, announced after: nothing is said in the channel that Redis did not record (a StateUnavailable
    # here is told privately). The post is also the proof the bot may post there; without it the watch is undone.
    new = await drift.watch(tenant_id, report, channel, command["user_id"], now=now)
    confirmation = watch_confirmation(tenant, report.verdict, command["user_id"])
    try:
        await client.chat_postMessage(channel=channel, text=confirmation.text, blocks=confirmation.blocks)
    except SlackApiError as exc:
        if new:
            await drift.unwatch(tenant_id, channel)
        error = str(exc.response.get("error") or "error")
        await respond(**notice_message(NOT_IN_CHANNEL.get(error, f"I cannot post in that channel ({error}).")
                                       + (" Nothing is watched yet." if new else "")).to_response())
        return
    await respond(**watch_answer(tenant, report.verdict, channel=None if channel == command["channel_id"] else channel,
                                 new=new).to_response())


async def unwatch(ack: AsyncAck, command: dict[str, Any], drift: DriftService, request: AnswerRequest) -> None:
    try:
        tenant = parse_tenant(request.args[0])
    except InvalidTenant as exc:
        await ack(**notice_message(exc.message).to_ack())
        return
    channel = command["channel_id"]
    ended, label = await drift.unwatch_matching(tenant.value, channel)
    text = (f"This channel no longer watches {label}." if ended else
            f"This channel does not watch {tenant.value}.")
    await ack(**notice_message(text).to_ack())


async def watching(ack: AsyncAck, command: dict[str, Any], drift: DriftService) -> None:
    rows, total = await drift.watching(command["channel_id"])
    await ack(**watching_message(command["channel_id"], rows, datetime.now(UTC), total).to_ack())


async def fleet(ack: AsyncAck, drift: DriftService) -> None:
    await ack(**fleet_message(await drift.fleet_summary(datetime.now(UTC))).to_ack())
