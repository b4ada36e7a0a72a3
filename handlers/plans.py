"""Updating posted fix plans from outside a button (Web API calls, no Bolt): when consent granted through the
workflow is verified, the tenant's plan messages show the fresh check (the consent step done). Used by the
admin-consent callback and the worker that follows approved consents."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.consent.model import ConsentState
from bot.consent.service import Verification
from bot.readiness.fix_service import FixService
from bot.store import StateUnavailable
from handlers.blocks.fix import plan_message

log = logging.getLogger(__name__)


async def mark_consented(client: AsyncWebClient, fixes: FixService, verification: Verification) -> int:
    """Re-render the tenant's plan messages from the verification's fresh check; how many were updated. The consent
    is already recorded: a plan that cannot be updated (Redis down, message gone) is logged, nothing more."""
    request = verification.outcome.request
    if request.state is not ConsentState.verified:
        return 0
    try:
        plans = await fixes.plans_of(request.tenant.id)
    except StateUnavailable:
        log.warning("could not read the fix plans of %s to mark its consent", request.tenant.id)
        return 0
    updated = 0
    for posted in plans:
        if posted.plan.version != request.version:
            continue  # the verification checked another revision's items
        message = plan_message(posted.plan, report=verification.report, rechecked_at=datetime.now(UTC))
        try:
            await client.chat_update(channel=posted.channel, ts=posted.ts, text=message.text, blocks=message.blocks)
            updated += 1
        except SlackApiError as exc:
            log.warning("could not update a fix plan of %s: %s", request.tenant.id, exc.response.get("error"))
    return updated
