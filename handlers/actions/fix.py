"""The buttons of a fix plan: Re-check now, Re-check after the wait, Start consent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.consent.service import ConsentService
from bot.readiness.fix import failed_read
from bot.readiness.fix_service import FixService, PostedPlan
from bot.readiness.service import CheckRequest, ReadinessService
from bot.store import StateUnavailable
from handlers.blocks.answers import notice_message
from handlers.blocks.consent import slack_date
from handlers.blocks.fix import plan_message, recheck_reply
from handlers.blocks.kit import Message, escape, section
from handlers.commands.consent import open_request


async def _posted(body: dict[str, Any], respond: AsyncRespond, fixes: FixService) -> PostedPlan | None:
    """The plan of the message the button is on; a copied or expired plan is turned away."""
    channel = (body.get("channel") or {}).get("id", "")
    ts = (body.get("message") or body.get("container") or {}).get("ts") or \
        (body.get("container") or {}).get("message_ts", "")
    try:
        posted = await fixes.stored(channel, str(ts)) if channel and ts else None
    except StateUnavailable as exc:
        await respond(**notice_message(f"I cannot {exc} right now: try again in a moment.").to_response())
        return None
    if posted is None:
        await respond(**notice_message("This plan is no longer kept (plans last two weeks): ask `/itdr fix` again."
                                       ).to_response())
    return posted


async def handle_fix_recheck_action(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient, fixes: FixService,
) -> None:
    """Re-check now: a fresh check marks each step on the plan message, and a reply in its thread names who asked."""
    await ack()
    posted = await _posted(body, respond, fixes)
    if posted is None or fixes.readiness is None:
        return
    report = await fixes.recheck(posted)
    refused = failed_read(report)
    if refused is not None:  # never marks from a failed read: the plan stays as it was
        await respond(**notice_message(f"Could not re-check {posted.plan.tenant_label}: {refused}").to_response())
        return
    scheduled = datetime.fromisoformat(posted.scheduled_at) if posted.scheduled_at else None
    message = plan_message(posted.plan, report=report, rechecked_at=datetime.now(UTC), scheduled_at=scheduled,
                           scheduled_by=posted.scheduled_by)
    await client.chat_update(channel=posted.channel, ts=posted.ts, text=message.text, blocks=message.blocks)
    reply = recheck_reply(posted.plan, report, body["user"]["id"], after_wait=False)
    await client.chat_postMessage(channel=posted.channel, thread_ts=posted.ts, text=reply.text, blocks=reply.blocks)


async def handle_fix_recheck_later_action(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient, fixes: FixService,
) -> None:
    """Re-check after the wait: one SAQ job at the plan's longest documented wait (a newer one replaces it)."""
    await ack()
    posted = await _posted(body, respond, fixes)
    if posted is None:
        return
    try:
        scheduled = await fixes.schedule(posted.channel, posted.ts, body["user"]["id"], datetime.now(UTC))
    except StateUnavailable as exc:
        await respond(**notice_message(f"I cannot {exc} right now, so nothing is scheduled.").to_response())
        return
    if scheduled is None or scheduled.scheduled_at is None:
        await respond(**notice_message("No step of this plan has a documented wait: use Re-check now.").to_response())
        return
    at = datetime.fromisoformat(scheduled.scheduled_at)
    message = plan_message(scheduled.plan, scheduled_at=at, scheduled_by=scheduled.scheduled_by)
    await client.chat_update(channel=posted.channel, ts=posted.ts, text=message.text, blocks=message.blocks)
    text = (f":alarm_clock: I will re-check {escape(scheduled.plan.tenant_label)} at {slack_date(at)} and reply in "
            "the plan's thread.")
    await respond(**Message(text=text, blocks=[section(text)]).to_response())


async def handle_fix_consent_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    consent: ConsentService, readiness: ReadinessService | None,
) -> None:
    """Start consent: the consent workflow's request card for the plan's tenant and revision, in this channel."""
    await ack()
    try:
        value = json.loads(action.get("value") or "{}")
        check = readiness.request(str(value.get("t", "")), str(value.get("v", ""))) if readiness else None
    except (ValueError, AttributeError):
        check = None
    if check is None or not isinstance(check, CheckRequest):
        await respond(**notice_message("This button does not name a tenant I can check.").to_response())
        return
    await open_request(respond, client, consent, check, body["user"]["id"], body["channel"]["id"])
