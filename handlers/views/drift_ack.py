"""The Acknowledge dialog's submission: a reason is required; the drift message then shows who and why."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.drift.service import DriftService
from bot.store import Cache
from handlers.actions.drift import message_key
from handlers.blocks.drift import closed_drift_message
from handlers.blocks.kit import escape
from handlers.ids import BlockId
from handlers.payloads import DriftValue


async def handle_drift_ack_submission(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient, drift: DriftService,
    cache: Cache,
) -> None:
    """Handles the Acknowledge dialog: a reason is required; the drift message then shows who and why."""
    try:
        target = DriftValue.from_value(view.get("private_metadata"))
    except ValueError:
        await ack(response_action="errors", errors={BlockId.DRIFT_ACK_REASON.value: "This dialog is not valid."})
        return
    values = (view.get("state") or {}).get("values") or {}
    reason = " ".join(str(((values.get(BlockId.DRIFT_ACK_REASON.value) or {}).get("reason") or {})
                          .get("value") or "").split())
    if not reason:
        await ack(response_action="errors", errors={BlockId.DRIFT_ACK_REASON.value: "An acknowledgement needs a "
                                                                                     "reason."})
        return
    if target.channel not in await drift.channels_of(target.tenant):
        await ack(response_action="errors", errors={BlockId.DRIFT_ACK_REASON.value: "That channel does not watch "
                                                                                     "the tenant any more."})
        return
    await ack()
    user = body["user"]["id"]
    await drift.acknowledge(target.tenant, target.channel, user, reason, now=datetime.now(UTC))
    note = f":ballot_box_with_check: Acknowledged by <@{user}>: _{escape(reason)}_"
    original = await cache.get_json(message_key(target))
    if isinstance(original, dict):
        message = closed_drift_message(original, note)
        await client.chat_update(channel=target.channel, ts=target.ts, text=message.text, blocks=message.blocks)
    else:  # the message's content is no longer at hand: say it in its thread instead of losing it
        await client.chat_postMessage(channel=target.channel, thread_ts=target.ts, text=note)
