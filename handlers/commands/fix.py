"""`/itdr fix TENANT [vN]`: the tenant's fix plan, posted in the channel so a re-check can update it in place and
reply in its thread."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.readiness.fix import PlanRefused
from bot.readiness.fix_service import FixService
from bot.readiness.service import ReadinessService
from bot.store import StateUnavailable
from handlers.blocks.answers import notice_message
from handlers.blocks.fix import plan_message
from handlers.cards import NOT_IN_CHANNEL
from handlers.payloads import AnswerRequest
from handlers.router import prepare_check


async def post_plan(
    ack: AsyncAck, respond: AsyncRespond, client: AsyncWebClient, command: dict[str, Any],
    readiness: ReadinessService | None, fixes: FixService, request: AnswerRequest,
) -> None:
    check = prepare_check(readiness, request)
    if isinstance(check, str):  # bad input or no configuration: answered at once, nothing asked of Microsoft
        await ack(**notice_message(check).to_ack())
        return
    await ack(**notice_message(f":hourglass_flowing_sand: Planning the fixes for `{check.tenant.value}` "
                               f"({check.version}): checking the tenant…").to_ack())
    try:
        _, plan = await fixes.plan(check)
    except PlanRefused as exc:  # the same answer as `check` gives a tenant nothing could be read from
        await respond(**notice_message(f":grey_question: Could not check `{check.tenant.value}`: {exc}").to_response())
        return
    if not plan.steps and not plan.unread:
        await respond(**notice_message(f":white_check_mark: {plan.nothing_to_fix}.").to_response())
        return
    message = plan_message(plan)
    channel = command["channel_id"]
    try:
        response = await client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "")
        await respond(**notice_message(NOT_IN_CHANNEL.get(error, f"Slack refused the message ({error or 'error'}).")
                                       ).to_response())
        return
    try:
        await fixes.posted(plan, channel, str(response["ts"]))
    except StateUnavailable as exc:
        await respond(**notice_message(f"The plan is posted, but I cannot {exc} right now, so its Re-check buttons "
                                       "will not find it.").to_response())
