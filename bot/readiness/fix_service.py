"""Fix plans posted in Slack and the re-checks that come back by themselves.

A posted plan is kept in Redis (state, fails closed) under its message, so a re-check, now or after Microsoft's
longest wait, can mark each step done or still missing on that message. A scheduled re-check is a SAQ job (in
Redis: it survives restarts and runs on any worker), one per tenant and channel: a newer plan, or a newer request,
aborts the older pending job before its own is queued.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from pydantic import BaseModel, ValidationError
from saq import Job
from saq.job import Status
from saq.queue.redis import RedisQueue

from bot.microsoft.http import Priority
from bot.readiness.fix import Plan
from bot.readiness.model import Report
from bot.readiness.service import CheckRequest, ReadinessService
from bot.store import State

log = logging.getLogger(__name__)

FIX_RECHECK_JOB = "fix_recheck"
PLAN_TTL_SECONDS = 14 * 24 * 3600  # a plan message can be re-checked for two weeks
RECHECK_RETRIES = 3
MAX_PLANS_PER_TENANT = 20
_PENDING = (Status.NEW, Status.QUEUED)


class PostedPlan(BaseModel):
    plan: Plan
    channel: str
    ts: str
    scheduled_by: str | None = None
    scheduled_at: str | None = None  # ISO 8601, when the re-check after the wait runs


class FixService:
    def __init__(self, readiness: ReadinessService | None, state: State, queue: RedisQueue, *,
                 job_timeout: int) -> None:
        self.readiness = readiness
        self.state = state
        self.queue = queue
        self.job_timeout = job_timeout

    def _plan_key(self, channel: str, ts: str) -> str:
        return self.state.key("fix-plan", channel, ts)

    def _pending_key(self, tenant: str, channel: str) -> str:
        return self.state.key("fix-recheck", tenant, channel)

    @staticmethod
    def job_key(tenant: str, channel: str, ts: str) -> str:
        return f"fix-recheck:{tenant}:{channel}:{ts}"

    def _tenant_key(self, tenant: str) -> str:
        return self.state.key("fix-plans", tenant)

    async def posted(self, plan: Plan, channel: str, ts: str) -> None:
        """Remember a plan posted at (channel, ts); it supersedes the tenant's pending re-check in this channel."""
        await self._save(PostedPlan(plan=plan, channel=channel, ts=ts))
        async with self.state.guard("record the fix plan") as redis, redis.pipeline(transaction=True) as pipe:
            # The tenant's latest plan messages, so a consent granted later can mark them too (bounded).
            key = self._tenant_key(plan.tenant_id)
            pipe.zadd(key, {f"{channel} {ts}": float(ts)})
            pipe.zremrangebyrank(key, 0, -MAX_PLANS_PER_TENANT - 1)
            pipe.expire(key, PLAN_TTL_SECONDS)
            await pipe.execute()
        await self._supersede(plan.tenant_id, channel, keep=None)

    async def plans_of(self, tenant: str) -> list[PostedPlan]:
        """The tenant's plan messages still kept, newest first."""
        async with self.state.guard("read the fix plans") as redis:
            members = await redis.zrevrange(self._tenant_key(tenant), 0, -1)
        plans = []
        for member in members:
            channel, _, ts = (member.decode() if isinstance(member, bytes) else str(member)).partition(" ")
            posted = await self.stored(channel, ts)
            if posted is not None:
                plans.append(posted)
        return plans

    async def _save(self, posted: PostedPlan) -> None:
        async with self.state.guard("record the fix plan") as redis:
            await redis.set(self._plan_key(posted.channel, posted.ts), posted.model_dump_json(),
                            ex=PLAN_TTL_SECONDS)

    async def stored(self, channel: str, ts: str) -> PostedPlan | None:
        async with self.state.guard("read the fix plan") as redis:
            raw = await redis.get(self._plan_key(channel, ts))
        if raw is None:
            return None
        try:
            return PostedPlan.model_validate_json(raw)
        except ValidationError:
            return None

    async def _supersede(self, tenant: str, channel: str, *, keep: str | None) -> None:
        async with self.state.guard("replace the pending re-check") as redis:
            previous = await redis.get(self._pending_key(tenant, channel))
        previous = previous.decode() if isinstance(previous, bytes) else previous
        if previous and previous != keep:
            async with self.state.guard("replace the pending re-check") as redis:  # the queue's faults too
                job = await self.queue.job(previous)
                if job is not None and job.status in _PENDING:
                    await self.queue.abort(job, "superseded by a newer plan")
                await redis.delete(self._pending_key(tenant, channel))

    async def schedule(self, channel: str, ts: str, user: str, now: datetime) -> PostedPlan | None:
        """Queue the re-check of the plan at (channel, ts) for after its longest wait; None when the plan is unknown
        (expired) or has no documented wait. Asking twice keeps the one job."""
        posted = await self.stored(channel, ts)
        wait = posted.plan.longest_wait if posted is not None else None
        if posted is None or wait is None:
            return None
        tenant = posted.plan.tenant_id
        key = self.job_key(tenant, channel, ts)
        await self._supersede(tenant, channel, keep=key)
        async with self.state.guard("schedule the re-check"):
            existing = await self.queue.job(key)
        if existing is not None and existing.status in _PENDING and posted.scheduled_at:
            return posted
        at = now + timedelta(minutes=wait)
        posted = posted.model_copy(update={"scheduled_by": user, "scheduled_at": at.isoformat(timespec="seconds")})
        # Promised before queued: the pointer and the plan say a re-check is coming, then the job is made.
        async with self.state.guard("schedule the re-check") as redis:
            await redis.set(self._pending_key(tenant, channel), key,
                            ex=int(wait * 60 + PLAN_TTL_SECONDS))
        await self._save(posted)
        async with self.state.guard("schedule the re-check"):
            await self.queue.enqueue(Job(
                FIX_RECHECK_JOB, kwargs={"tenant": tenant, "channel": channel, "ts": ts, "user": user}, key=key,
                scheduled=int(at.timestamp()), timeout=self.job_timeout, retries=RECHECK_RETRIES, retry_delay=30.0,
                retry_backoff=True, ttl=PLAN_TTL_SECONDS,
            ))
        return posted

    async def pending(self, tenant: str, channel: str) -> str | None:
        async with self.state.guard("read the pending re-check") as redis:
            value = await redis.get(self._pending_key(tenant, channel))
        return value.decode() if isinstance(value, bytes) else value

    async def finished(self, tenant: str, channel: str, key: str) -> None:
        """The scheduled re-check ran: forget its pointer (unless a newer one replaced it meanwhile)."""
        if await self.pending(tenant, channel) == key:
            async with self.state.guard("finish the re-check") as redis:
                await redis.delete(self._pending_key(tenant, channel))

    async def recheck(self, posted: PostedPlan, *, priority: Priority = Priority.HIGH) -> Report:
        """A fresh check of the plan's tenant and revision."""
        assert self.readiness is not None
        request = CheckRequest(self.readiness.request(posted.plan.tenant_id).tenant, posted.plan.version)
        return await self.readiness.run(request, fresh=True, priority=priority)

    async def plan(self, check: CheckRequest, *, fresh: bool = False) -> tuple[Report, Plan]:
        assert self.readiness is not None
        return await self.readiness.plan(check, fresh=fresh)
