"""The buttons of a drift message: Re-check, Start consent, Acknowledge (with a reason), Snooze 24 h."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.consent.service import ConsentService
from bot.drift.service import DriftService
from bot.microsoft.tenant import parse_tenant
from bot.readiness.service import CheckRequest, ReadinessService
from bot.store import Cache
from handlers.blocks.answers import notice_message
from handlers.blocks.drift import closed_drift_message, drift_message
from handlers.blocks.kit import section
from handlers.commands.consent import open_request
from handlers.ids import BlockId, ViewId
from handlers.payloads import DriftValue


async def _tenant(body: dict[str, Any], action: dict[str, Any], drift: DriftService, respond: AsyncRespond
                  ) -> str | None:
    """The tenant a button names, if the channel it was clicked in watches it (a button copied elsewhere or
    edited is turned away)."""
    try:
        tenant = parse_tenant(str(json.loads(action.get("value") or "{}").get("t", ""))).value
    except (ValueError, AttributeError):
        tenant = ""
    channel = (body.get("channel") or {}).get("id", "")
    if not tenant or channel not in await drift.channels_of(tenant):
        await respond(**notice_message("This channel does not watch that tenant (any more).").to_response())
        return None
    return tenant


async def handle_drift_recheck_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    drift: DriftService,
) -> None:
    """Handles Re-check: a fresh check now; a change is posted in this channel and promised to every other channel
    watching the tenant; no change is said privately."""
    await ack()
    tenant = await _tenant(body, action, drift, respond)
    if tenant is None:
        return
    channel = body["channel"]["id"]
    report, change, who = await drift.recheck(tenant, channel, now=datetime.now(UTC))
    if change is not None and change.announce:
        message = drift_message(change, drift.catalog, who)
        await client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
        return
    await respond(**notice_message(f"Checked again: nothing changed. The verdict is {report.verdict.value}.")
                  .to_response())


async def handle_drift_consent_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    drift: DriftService, consent: ConsentService, readiness: ReadinessService | None,
) -> None:
    """Handles Start consent: a consent request in this channel for what the tenant now lacks."""
    await ack()
    tenant = await _tenant(body, action, drift, respond)
    if tenant is None or readiness is None:
        return
    check = CheckRequest(parse_tenant(tenant), drift.catalog.latest.version)
    await open_request(respond, client, consent, check, body["user"]["id"], body["channel"]["id"])


def message_key(target: DriftValue) -> str:
    return f"drift-message:{target.channel}:{target.ts}"


async def handle_drift_ack_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    drift: DriftService, cache: Cache,
) -> None:
    """Handles Acknowledge: a dialog asks why; the same drift is then not announced again until it changes."""
    await ack()
    tenant = await _tenant(body, action, drift, respond)
    if tenant is None:
        return
    target = DriftValue(tenant=tenant, channel=body["channel"]["id"],
                        ts=(body.get("container") or {}).get("message_ts", ""))
    # The dialog's submission does not carry the message; keep it to show the acknowledgement in place.
    message = body.get("message") or {}
    await cache.set_json(message_key(target), {"text": message.get("text"), "blocks": message.get("blocks")}, 3600)
    metadata = target.to_value()
    await client.views_open(trigger_id=body["trigger_id"], view={
        "type": "modal", "callback_id": ViewId.DRIFT_ACK.value, "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Acknowledge drift"},
        "submit": {"type": "plain_text", "text": "Acknowledge"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section("Acknowledged drift is not announced again in this channel until the item comes back and is "
                    "lost anew (other channels watching the tenant are told as usual). The channel sees who "
                    "acknowledged it and why."),
            {"type": "input", "block_id": BlockId.DRIFT_ACK_REASON.value,
             "label": {"type": "plain_text", "text": "Reason"},
             "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True, "max_length": 500}},
        ],
    })


async def handle_drift_snooze_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    drift: DriftService,
) -> None:
    """Handles Snooze 24 h: the tenant's changes are not announced in this channel for a day (other channels
    watching it are told as usual)."""
    await ack()
    tenant = await _tenant(body, action, drift, respond)
    if tenant is None:
        return
    snoozed_until = await drift.snooze(tenant, body["channel"]["id"], now=datetime.now(UTC))
    if snoozed_until is None:
        await respond(**notice_message("That tenant has not been checked yet; nothing to snooze.").to_response())
        return
    until = snoozed_until.strftime("%Y-%m-%d %H:%M UTC")
    note = (f":zzz: Snoozed here by <@{body['user']['id']}> until {until}: its changes are not announced in this "
            "channel until then.")
    message = closed_drift_message(body.get("message") or {}, note)
    await client.chat_update(channel=body["channel"]["id"], ts=(body.get("container") or {}).get("message_ts", ""),
                             text=message.text, blocks=message.blocks)
