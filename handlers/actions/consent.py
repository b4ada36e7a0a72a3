"""The buttons of a consent card: Review, Approve, Deny, Verify now (and the Grant link, only acknowledged)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.consent.model import Outcome
from bot.consent.service import BadSignature, ConsentService, UnknownRequest
from bot.readiness.fix_service import FixService
from bot.readiness.service import ReadinessService
from handlers.blocks.answers import notice_message
from handlers.blocks.consent import deny_view, review_view
from handlers.cards import update_card
from handlers.commands.consent import NO_APPROVERS, open_request
from handlers.ids import SubCommand
from handlers.payloads import AnswerRequest, BadPayload, StartConsentValue
from handlers.plans import mark_consented
from handlers.router import prepare_check

FORGED = "That button was not issued by itdr for an open request (edited or forged); nothing was changed."


async def _request_id(consent: ConsentService, body: dict[str, Any], action: dict[str, Any],
                      respond: AsyncRespond) -> str | None:
    """The request a click names, or None after telling the clicker (and the tenant's audit trail) why not."""
    try:
        return consent.request_id(action.get("value"))
    except BadSignature:
        container = body.get("container") or {}
        await consent.refuse_forged(str(container.get("channel_id") or (body.get("channel") or {}).get("id") or ""),
                                    str(container.get("message_ts") or ""), body["user"]["id"])
        await respond(**notice_message(FORGED).to_response())
        return None


async def _show(outcome: Outcome, consent: ConsentService, client: AsyncWebClient, respond: AsyncRespond) -> None:
    if outcome.changed:
        await update_card(client, consent, outcome.request)
    if outcome.refusal:
        await respond(**notice_message(outcome.refusal).to_response())


async def _decide(
    consent: ConsentService, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
    client: AsyncWebClient, decide: Callable[[str, str], Awaitable[Outcome]],
) -> None:
    """A click that decides: the request it names, the decision by the clicker, then the card or a refusal."""
    request_id = await _request_id(consent, body, action, respond)
    if request_id is None:
        return
    try:
        outcome = await decide(request_id, body["user"]["id"])
    except UnknownRequest:
        await respond(**notice_message(await consent.gone(action.get("value"))).to_response())
        return
    await _show(outcome, consent, client, respond)


async def handle_consent_approve_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    consent: ConsentService,
) -> None:
    """Handles Approve: one atomic decision; the card changes once per state, a refusal is told privately."""
    await ack()
    await _decide(consent, body, action, respond, client, consent.approve)


async def handle_consent_deny_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    consent: ConsentService,
) -> None:
    """Handles Deny: approvers get a dialog asking why; anyone else a private refusal."""
    await ack()
    request_id = await _request_id(consent, body, action, respond)
    if request_id is None:
        return
    try:
        refusal = await consent.may_deny(request_id, body["user"]["id"])
        request = await consent.get(request_id)
    except UnknownRequest:
        await respond(**notice_message(await consent.gone(action.get("value"))).to_response())
        return
    if refusal is not None:
        await _show(refusal, consent, client, respond)
        return
    await client.views_open(trigger_id=body["trigger_id"], view=deny_view(request, consent.button_value(request)))


async def handle_consent_review_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    consent: ConsentService,
) -> None:
    """Handles Review: every item of the request in a dialog, per API, purpose and privilege."""
    await ack()
    request_id = await _request_id(consent, body, action, respond)
    if request_id is None:
        return
    try:
        request = await consent.get(request_id)
    except UnknownRequest:
        await respond(**notice_message(await consent.gone(action.get("value"))).to_response())
        return
    await client.views_open(trigger_id=body["trigger_id"], view=review_view(request, consent.catalog))


async def handle_consent_verify_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    consent: ConsentService, fixes: FixService,
) -> None:
    """Handles Verify now: a fresh readiness check, shown on the card (verified, or what is still missing), and
    on the tenant's fix plans once verified (their consent step done)."""
    await ack()

    async def verify(request_id: str, actor: str) -> Outcome:
        verification = await consent.verify(request_id, actor)
        if verification.outcome.changed:
            await mark_consented(client, fixes, verification)
        return verification.outcome

    await _decide(consent, body, action, respond, client, verify)


async def handle_consent_start_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    consent: ConsentService, readiness: ReadinessService | None,
) -> None:
    """Handles Start consent (on a check, a fix plan): a consent request in this channel, checked as a typed
    `/itdr consent TENANT vN`; a second click (or a second person) is pointed at the open request."""
    await ack()
    try:
        wanted = StartConsentValue.from_value(action.get("value"))
    except BadPayload:
        await respond(**notice_message("That button does not name a tenant; nothing was changed.").to_response())
        return
    check = prepare_check(readiness, AnswerRequest(cmd=SubCommand.CHECK, args=(wanted.tenant, wanted.version)))
    if isinstance(check, str):
        await respond(**notice_message(check).to_response())
        return
    if not consent.configured:
        await respond(**notice_message(NO_APPROVERS).to_response())
        return
    channel = str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or "")
    await open_request(respond, client, consent, check, body["user"]["id"], channel)


async def handle_consent_grant_action(ack: AsyncAck) -> None:
    """Handles the Grant admin consent link button: the browser opens the link; the app only acknowledges."""
    await ack()
