"""The scheduled re-check of a fix plan, run by any `itdr worker` once Microsoft's longest wait has passed: a fresh
check marks each step of the plan message done or still missing, and a reply in its thread names who asked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from saq import Job
from slack_sdk.errors import SlackApiError

from bot.readiness.fix import failed_read
from bot.runtime import Runtime
from handlers.blocks.fix import plan_message, recheck_reply
from handlers.blocks.kit import Message, escape, section

REPLY_TTL_SECONDS = 14 * 24 * 3600


async def fix_recheck(ctx: dict[str, Any], *, tenant: str, channel: str, ts: str, user: str) -> str:
    runtime: Runtime = ctx["runtime"]
    job: Job = ctx["job"]
    fixes = runtime.fixes
    if await fixes.pending(tenant, channel) != job.key:
        return "superseded"  # a newer plan or request replaced this one after it was queued
    posted = await fixes.stored(channel, ts)
    if posted is None or fixes.readiness is None:
        await fixes.finished(tenant, channel, job.key)
        return "plan expired"
    report = await fixes.recheck(posted)
    refused = failed_read(report)
    if refused is None:
        message = plan_message(posted.plan, report=report, rechecked_at=datetime.now(UTC))
        try:
            await runtime.slack.chat_update(channel=channel, ts=ts, text=message.text, blocks=message.blocks)
        except SlackApiError as exc:
            if exc.response.get("error") != "message_not_found":
                raise
        reply = recheck_reply(posted.plan, report, user, after_wait=True)
    else:
        text = (f"Could not re-check {escape(posted.plan.tenant_label)} after the wait for <@{escape(user)}>: "
                f"{escape(refused)}")
        reply = Message(text=text, blocks=[section(text)])
    # Once per job, however often it runs; released when Slack refuses, so a retry posts it.
    if await runtime.cache.claim("fix-recheck-replied", job.key, ttl=REPLY_TTL_SECONDS):
        try:
            await runtime.slack.chat_postMessage(channel=channel, thread_ts=ts, text=reply.text, blocks=reply.blocks)
        except Exception:
            await runtime.cache.release("fix-recheck-replied", job.key)
            raise
    await fixes.finished(tenant, channel, job.key)
    return "rechecked" if refused is None else "unreadable"
