"""`/itdr consent TENANT [vN]` and `/itdr audit TENANT`."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.consent.model import ConsentRequest
from bot.consent.service import ConsentRefused, ConsentService
from bot.microsoft.errors import InvalidTenant
from bot.readiness.service import CheckRequest, ReadinessService
from catalog.words import counted
from handlers.blocks.answers import mrkdwn_notice, notice_message
from handlers.blocks.consent import audit_message
from handlers.blocks.kit import escape
from handlers.cards import CannotPost, post_card, tell_unfinished
from handlers.payloads import AnswerRequest
from handlers.router import prepare_check

AUDIT_ENTRIES = 20
NO_APPROVERS = ("Consent requests need approvers: an operator sets ITDR_APPROVERS to the Slack user ids (U…) or "
                "user-group ids (S…) allowed to approve, and ITDR_REQUIRED_APPROVALS (default 1).")


def _where(consent: ConsentService, request: ConsentRequest) -> str:
    """Where the open request's card is: its permalink, or its channel while the card is being posted."""
    if request.message_ts is None:
        return f"its card is being posted in <#{request.channel}> right now"
    link = consent.settings.slack_web_url(f"archives/{request.channel}/p{request.message_ts.replace('.', '')}")
    return f"{link} (in <#{request.channel}>)"


async def request_consent(
    ack: AsyncAck, respond: AsyncRespond, client: AsyncWebClient, command: dict[str, Any],
    consent: ConsentService, readiness: ReadinessService | None, request: AnswerRequest,
) -> None:
    """Check the tenant, then post one consent card in the channel (or point at the open one)."""
    check = prepare_check(readiness, request)
    if isinstance(check, str):
        await ack(**notice_message(check).to_ack())
        return
    if not consent.configured:
        await ack(**notice_message(NO_APPROVERS).to_ack())
        return
    await ack(**notice_message(f":hourglass_flowing_sand: Preparing the consent request for `{check.tenant.value}` "
                               f"({check.version}): checking what the tenant has…").to_ack())
    # Recorded while under way: if this server dies mid-way, the next attempt (or a worker, after a while) replaces
    # the "Preparing…" message instead of leaving it there for ever.
    attempt, unfinished = await consent.begin_attempt(check, command["user_id"], command["response_url"])
    for earlier in unfinished:
        await tell_unfinished(earlier, taken_over=True)
    try:
        await open_request(respond, client, consent, check, command["user_id"], command["channel_id"])
    finally:
        await consent.end_attempt(attempt)


async def open_request(
    respond: AsyncRespond, client: AsyncWebClient, consent: ConsentService, check: CheckRequest, user: str,
    channel: str,
) -> None:
    """Check the tenant, then post one consent card in `channel` (or point at the open one); tell `user` privately
    through `respond`."""
    try:
        prepared = await consent.prepare(check, user, channel)
    except ConsentRefused as exc:
        await respond(**notice_message(str(exc)).to_response())
        return
    if prepared.satisfied is not None:
        have = prepared.satisfied.satisfied_version
        await respond(**mrkdwn_notice(
            f"{escape(prepared.satisfied.tenant.domain or check.tenant.value)} already grants everything "
            f"{check.version} asks for (fully satisfies {have}): no consent is needed.").to_response())
        return
    existing = prepared.existing
    new = prepared.request
    if existing is None and new is not None:
        existing = await consent.reserve(new)
        if existing is None:
            try:
                ts = await post_card(client, consent, new)
            except CannotPost as exc:
                await consent.release(new)
                await respond(**notice_message(str(exc)).to_response())
                return
            await consent.publish(new, ts)
            await respond(**mrkdwn_notice(
                f"Posted the consent request for {escape(new.tenant.label)} ({new.version}) in this channel; it needs "
                f"{counted(new.required_approvals, 'approval')}.").to_response())
            return
    assert existing is not None
    if existing.state.open:
        await respond(**mrkdwn_notice(
            f"A consent request for {escape(existing.tenant.label)} ({existing.version}) is already open: "
            f"{_where(consent, existing)}").to_response())
    else:
        await respond(**mrkdwn_notice(f"The last request for {escape(existing.tenant.label)} has "
                                      f"{existing.state.value}; ask again to open a new one.").to_response())


async def show_audit(ack: AsyncAck, consent: ConsentService, request: AnswerRequest) -> None:
    """The latest audit entries of a tenant, privately."""
    tenant = request.args[0] if request.args else ""
    try:
        records = await consent.audit(tenant, newest=AUDIT_ENTRIES)
    except InvalidTenant as exc:
        await ack(**notice_message(exc.message).to_ack())
        return
    await ack(**audit_message(tenant, records).to_ack())
