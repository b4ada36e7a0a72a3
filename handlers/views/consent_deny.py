"""The Deny dialog's submission: a reason is required; the card then shows who denied and why."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.consent.service import BadSignature, ConsentService, UnknownRequest
from handlers.cards import update_card
from handlers.ids import BlockId


async def handle_consent_deny_submission(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient, consent: ConsentService
) -> None:
    """Handles a submitted Deny dialog: refused with the reason in the dialog itself, or recorded and shown."""

    async def refuse(message: str) -> None:
        await ack(response_action="errors", errors={BlockId.CONSENT_DENY_REASON.value: message})

    try:
        request_id = consent.request_id(view.get("private_metadata"))
    except BadSignature:
        await refuse("This dialog does not belong to a consent request (edited or forged); nothing was changed.")
        return
    values = (view.get("state") or {}).get("values") or {}
    reason = str(((values.get(BlockId.CONSENT_DENY_REASON.value) or {}).get("reason") or {}).get("value") or "")
    try:
        outcome = await consent.deny(request_id, body["user"]["id"], reason)
    except UnknownRequest:
        await refuse(await consent.gone(view.get("private_metadata")))
        return
    if outcome.refusal:
        await refuse(outcome.refusal)
    else:
        await ack()
    if outcome.changed:
        await update_card(client, consent, outcome.request)
