"""`itdr worker`: a SAQ worker on the bot's Redis that sweeps watched tenants, announces drift and new catalog
revisions, and follows approved consents to their proof. Run any number, on any number of machines.

Jobs (see `bot.drift.sweep.JobName`):
- `sweep` (cron ITDR_SWEEP_CRON, unique across workers): queue a check of every watched tenant;
- `check_tenant`: check one tenant (Graph priority `low`), compare with its snapshot, record the change; a 429 or 503
  past the retries reschedules it after Retry-After (at most 3 times a sweep, then it counts as unknown);
- `finish_sweep`: mark the sweep finished, so the announcements its checks recorded (see `bot.drift.outbox`) go
  out, and queue their delivery; idempotent, so a finish cut short is simply run again;
- `deliver_channel`: post a channel's due announcements under a lease, one message per tenant or one digest
  beyond ITDR_DIGEST_THRESHOLD, at most one message a second per channel, 429s honoured, each removed from the
  outbox only once Slack accepted it;
- `deliver_pending` (every ITDR_DELIVERY_CHECK_SECONDS): queue a delivery for every channel with announcements
  that no worker holds (what a killed or cancelled delivery left);
- `poll_consents` (every ITDR_CONSENT_POLL_SECONDS): expire what is due, verify approved requests;
- `summarise_fleet` (every minute, unique): recompute the fleet summary App Home and `/itdr fleet` read, when
  tenants were watched, unwatched, imported or read since it was computed.
At start a worker announces a catalog revision no worker has announced yet (once across all) and queues a sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

from redis.exceptions import RedisError
from saq import CronJob, Job
from saq.queue.redis import RedisQueue
from saq.types import PartialTimersDict
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.consent.service import is_satisfied
from bot.drift.outbox import Pending
from bot.drift.pacing import ChannelPacer
from bot.drift.sweep import (
    MAX_RESCHEDULES,
    SUMMARY_TIMEOUT_SECONDS,
    JobName,
    PatientQueue,
    PromptWorker,
    deliver_soon,
    finish_now,
    queue_for,
    summarise_soon,
)
from bot.microsoft.http import Priority
from bot.microsoft.tokens import LOGIN_POOL_SIZE
from bot.ops_monitor import OpsMonitor
from bot.readiness.fix_service import FIX_RECHECK_JOB
from bot.readiness.model import Verdict
from bot.runtime import Runtime
from bot.settings import Mode, Settings
from bot.store import QUEUE_BLOCK_SECONDS, redis_fault
from bot.worker_fix import fix_recheck
from handlers.blocks.drift import digest_message, drift_message, revision_message
from handlers.blocks.kit import Message
from handlers.cards import NOT_IN_CHANNEL, tell_unfinished, update_card
from handlers.plans import mark_consented

log = logging.getLogger(__name__)

#: SAQ's check for jobs lost with a killed worker runs at most this often; with the job timeout it bounds the delay
#: before such a job runs again (75 + 30 s by default: within 2 minutes).
STUCK_SWEEP_SECONDS = 30


class Rescheduled(Exception):
    """Not a failure: Microsoft asked us to come back later (SAQ retries the same job after `retry_delay`)."""


class LeaseLost(Exception):
    """This worker's hold on a channel's delivery lapsed (it stalled past the lease) and another may post: stop
    rather than post twice."""


class _QuietReschedules(logging.Filter):
    """SAQ logs every exception a job raises with its traceback; a reschedule is expected and logged by us."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Rescheduled))


def token_threads(concurrency: int) -> int:
    """Threads for msal's token requests: two per check in flight, within the login session's pool
    (`bot.microsoft.tokens.LOGIN_POOL_SIZE` connections, more would be opened and dropped)."""
    return max(4, min(2 * concurrency, LOGIN_POOL_SIZE))


def cron_every(seconds: int) -> str:
    """A cron expression firing every `seconds` (SAQ's croniter takes seconds as a sixth field)."""
    if seconds % 60 == 0 and seconds < 3600:
        return f"*/{seconds // 60} * * * *"
    return f"* * * * * */{seconds}" if seconds < 60 else f"*/{max(1, seconds // 60)} * * * *"


# ----------------
#  jobs
# ----------------


def _runtime(ctx: dict[str, Any]) -> Runtime:
    runtime: Runtime = ctx["runtime"]
    return runtime


async def sweep(ctx: dict[str, Any]) -> str:
    runtime = _runtime(ctx)
    return await runtime.drift.start_sweep(ctx["queue"], runtime.settings, now=datetime.now(UTC))


async def check_tenant(ctx: dict[str, Any], *, tenant: str, sweep: str | None = None) -> str:
    runtime = _runtime(ctx)
    job: Job = ctx["job"]
    report = await runtime.drift.check(tenant, priority=Priority.LOW)
    if report.verdict is Verdict.unknown and report.retry_after is not None and job.attempts <= MAX_RESCHEDULES:
        job.retry_delay = report.retry_after
        job.retries = max(job.retries, job.attempts + 1)
        log.info("tenant %s throttled: checking again in %.0f s (attempt %d)", tenant, report.retry_after,
                 job.attempts)
        raise Rescheduled(tenant)
    recorded, complete = await runtime.drift.sweep_tenant(tenant, report, now=datetime.now(UTC), sweep=sweep)
    if complete and sweep is not None:
        await finish_now(ctx["queue"], sweep)
    if recorded is None:
        return "counted"
    for channel in recorded.due:  # recorded after its sweep finished (or in none): announced now, not dropped
        await deliver_soon(ctx["queue"], channel)
    return recorded.change.kind.value


async def finish_sweep(ctx: dict[str, Any], *, sweep: str) -> int:
    """Mark the sweep finished, so its announcements may go out, and have them delivered; run again (by a retry, a
    second worker, the fallback finish) it delivers what is still pending. The number of channels queued."""
    runtime = _runtime(ctx)
    await runtime.drift.finish(sweep, datetime.now(UTC))
    await summarise_soon(ctx["queue"])  # App Home and /itdr fleet show the sweep's outcome now, not in a minute
    return await deliver_pending(ctx)


async def deliver_pending(ctx: dict[str, Any]) -> int:
    """Queue a delivery for every channel with announcements no worker is delivering (after a finish, and every
    ITDR_DELIVERY_CHECK_SECONDS for what a killed or cancelled delivery left); the number queued."""
    channels = await _runtime(ctx).drift.outbox_channels(unleased=True)
    for channel in channels:
        await deliver_soon(ctx["queue"], channel)
    return len(channels)


async def deliver_channel(ctx: dict[str, Any], *, channel: str) -> int:
    """Post the channel's due announcements, paced; each is removed from the outbox only once Slack accepted it.
    More changed tenants than ITDR_DIGEST_THRESHOLD make one digest. The number of messages posted."""
    runtime = _runtime(ctx)
    drift, settings = runtime.drift, runtime.settings
    lease_seconds = settings.itdr_delivery_lease_seconds
    token = await drift.lease(channel, lease_seconds)
    if token is None:
        return 0  # another worker delivers the channel, and looks again before it lets go
    posted = 0
    try:
        while True:
            due, dropped = await drift.deliverable(channel, datetime.now(UTC))
            await drift.drop(channel, dropped)
            if not due:
                break
            for message, entries in _messages(due, runtime, settings.itdr_digest_threshold):
                if not await _post(ctx, channel, message, entries, token, lease_seconds):
                    return posted  # the channel is broken: what is left was dropped
                posted += 1
    finally:
        # Shielded: a cancelled job (timeout, shutdown) still lets go, so a retry need not wait out the lease.
        with contextlib.suppress(Exception):
            await asyncio.shield(drift.release_lease(channel, token))
    # An announcement recorded between the last look and letting go was turned away by the lease: take it now.
    if (await drift.deliverable(channel, datetime.now(UTC)))[0]:
        await deliver_soon(ctx["queue"], channel)
    return posted


def _messages(due: list[Pending], runtime: Runtime, threshold: int) -> list[tuple[Message, list[Pending]]]:
    """What to post for a channel's due announcements, each with the entries it delivers, in the order recorded:
    prepared messages (revisions) as they are; changes one message each, or one digest past `threshold`."""
    prepared = [(Message(text=e.text or "", blocks=e.blocks or []), [e]) for e in due if e.change is None]
    changes = [e for e in due if e.change is not None]
    if len(changes) > threshold:
        digest = digest_message([e.change for e in changes if e.change is not None], runtime.catalog)
        return [*prepared, (digest, changes)]
    return prepared + [(drift_message(e.change, runtime.catalog, e.who), [e]) for e in changes
                       if e.change is not None]


async def _post(ctx: dict[str, Any], channel: str, message: Message, entries: list[Pending], token: str,
                lease_seconds: int) -> bool:
    """Post one message and mark its entries delivered; False when the bot cannot post in the channel (the
    subscriptions are marked broken and the channel's announcements dropped)."""
    drift = _runtime(ctx).drift
    pacer: ChannelPacer = ctx["pacer"]
    # Held through the pacer's wait (a 429's Retry-After included) and the post itself.
    if not await drift.renew_lease(channel, token, lease_seconds + await pacer.held_for(channel)):
        raise LeaseLost(channel)
    await pacer.wait(channel)
    if not await drift.renew_lease(channel, token, lease_seconds):
        raise LeaseLost(channel)
    try:
        await ctx["poster"].chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "")
        metrics.SLACK_POSTS.labels(result="rate_limited" if error == "ratelimited" else "failed").inc()
        if error in NOT_IN_CHANNEL:
            due, dropped = await drift.deliverable(channel, datetime.now(UTC))
            await drift.drop(channel, [*entries, *due, *dropped], broken=f"{error}: {NOT_IN_CHANNEL[error]}")
            return False
        if error == "ratelimited":  # come back when Slack says, and hold the channel for every worker till then
            retry_after = float(exc.response.headers.get("Retry-After", 1))
            await pacer.hold(channel, retry_after)
            job: Job = ctx["job"]
            job.retry_delay = retry_after
            job.retry_backoff = False
            job.retries = max(job.retries, job.attempts + 1)  # a rate limit is never a reason to drop a message
            raise Rescheduled(channel) from None
        raise
    except Exception:
        metrics.SLACK_POSTS.labels(result="failed").inc()
        raise
    await drift.delivered(channel, entries)
    metrics.SLACK_POSTS.labels(result="ok").inc()
    metrics.CHANGES_ANNOUNCED.inc(len({e.tenant for e in entries if e.tenant}))
    return True


async def post_message(ctx: dict[str, Any], *, channel: str, text: str, blocks: list[dict[str, Any]],
                       notification: str, tenant: str | None = None) -> str:
    """A post the version before the outbox queued as a job, still in the queue at a deploy: recorded as a pending
    announcement (once, keyed by its notification) and delivered like every other."""
    drift = _runtime(ctx).drift
    await drift.promise_message(channel, text, blocks, notification, datetime.now(UTC))
    await deliver_soon(ctx["queue"], channel)
    return "taken over"


async def summarise_fleet(ctx: dict[str, Any]) -> int:
    """Recompute the stored fleet summary if the fleet changed since; the number of tenants summarised (0: it was
    current)."""
    fleet = await _runtime(ctx).drift.summarise_fleet(datetime.now(UTC))
    return fleet.tenants if fleet is not None else 0


async def poll_consents(ctx: dict[str, Any]) -> int:
    """Expire due consent requests and verify approved ones; the number of cards updated."""
    runtime = _runtime(ctx)
    consent = runtime.consent
    updated = 0
    for attempt in await consent.unfinished_attempts():  # lost with their server: their "Preparing…" is told
        await tell_unfinished(attempt, taken_over=False, session=runtime.http)
    for outcome in await consent.expire_due():
        await update_card(runtime.slack, consent, outcome.request)
        updated += 1
    if runtime.readiness is None:
        return updated
    for request in await consent.awaiting_proof():
        report = await runtime.drift.check(request.tenant.id, priority=Priority.LOW)
        if is_satisfied(runtime.catalog, report, request.version):
            verification = await consent.verify(request.id, "itdr worker")
            if verification.outcome.changed:
                await update_card(runtime.slack, consent, verification.outcome.request)
                await mark_consented(runtime.slack, runtime.fixes, verification)
                updated += 1
    return updated


async def announce_revision(runtime: Runtime, queue: RedisQueue) -> bool:
    """Announce a catalog revision no worker announced yet (recorded with its announcements, once across every
    worker) and sweep for it; True when this worker did."""
    drift = runtime.drift
    latest = runtime.catalog.latest.version

    async def message(before: str) -> tuple[str, list[dict[str, Any]]]:
        diff = runtime.catalog.diff(before, latest)
        lacking, watched = await drift.lacking({f"{item.api.value}.{item.name}" for item in diff.added})
        announcement = revision_message(diff, runtime.catalog, lacking=lacking, watched=watched)
        return announcement.text, announcement.blocks

    before = await drift.announce_revision(latest, message, datetime.now(UTC))
    if before is not None:
        for channel in await drift.outbox_channels():  # else within ITDR_DELIVERY_CHECK_SECONDS
            await deliver_soon(queue, channel)
        log.info("announced revision %s (after %s) to watching channels", latest, before)
    # This announcement's sweep, or one a worker recorded and died before queueing.
    await drift.sweep_owed(queue, runtime.settings, now=datetime.now(UTC))
    return before is not None


# ----------------
#  the worker
# ----------------


async def wait_for_redis(runtime: Runtime, stopping: asyncio.Event) -> bool:
    """Start only once Redis answers (the queue and every decision live there): wait and retry, saying so once.
    False when the worker is asked to stop first."""
    delay = 0.5
    told = False
    while not stopping.is_set():
        try:
            await runtime.state.client.ping()
            return True
        except (RedisError, OSError) as exc:
            if not told:
                log.warning("Redis %s: waiting for it before taking jobs", redis_fault(exc))
                told = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(delay * 2, 30.0)
    return False


def build_worker(
    runtime: Runtime, queue: PatientQueue, *, timers: PartialTimersDict | None = None, grace_seconds: int = 5
) -> PromptWorker:
    settings = runtime.settings
    pacer = ChannelPacer(runtime.state.client, settings.redis_prefix)
    # Posts go through the pacer one attempt at a time: a 429 is rescheduled by the job, never retried unpaced.
    poster = AsyncWebClient(token=settings.secret("slack_bot_token"), base_url=settings.slack_api_url,
                            session=runtime.http, timeout=10,
                            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)])

    async def startup(ctx: dict[str, Any]) -> None:
        ctx.update(runtime=runtime, queue=queue, pacer=pacer, poster=poster)
        stopping: asyncio.Event = ctx["worker"].event  # set by SIGINT/SIGTERM
        if await wait_for_redis(runtime, stopping):
            await announce_revision(runtime, queue)

    saq_log = logging.getLogger("saq")
    if not any(isinstance(f, _QuietReschedules) for f in saq_log.filters):  # every worker, in any process
        saq_log.addFilter(_QuietReschedules())
    monitor = OpsMonitor(runtime)
    return PromptWorker(
        queue,
        functions=[(JobName.CHECK.value, check_tenant), (JobName.FINISH.value, finish_sweep),
                   (JobName.DELIVER.value, deliver_channel), (JobName.DELIVER_PENDING.value, deliver_pending),
                   (JobName.LEGACY_POST.value, post_message),
                   (JobName.SWEEP.value, sweep),
                   (JobName.CONSENTS.value, poll_consents), (FIX_RECHECK_JOB, fix_recheck),
                   (JobName.SUMMARY.value, summarise_fleet)],
        concurrency=settings.itdr_worker_concurrency,
        # A bounded wait for a job, within the queue client's socket timeout: an idle worker is not an outage.
        dequeue_timeout=QUEUE_BLOCK_SECONDS,
        cron_jobs=[
            # One attempt each: a sweep is not started twice, and the next poll comes soon enough.
            CronJob(sweep, cron=settings.itdr_sweep_cron, unique=True, timeout=600, retries=1),
            CronJob(poll_consents, cron=cron_every(settings.itdr_consent_poll_seconds), unique=True, timeout=300,
                    retries=1),
            CronJob(summarise_fleet, cron="* * * * *", unique=True, timeout=SUMMARY_TIMEOUT_SECONDS, retries=1),
            CronJob(deliver_pending, cron=cron_every(settings.itdr_delivery_check_seconds), unique=True,
                    timeout=120, retries=1),
        ],
        startup=[startup, monitor.start],
        shutdown=[monitor.stop],
        before_process=[monitor.before_job],
        after_process=[monitor.after_job],
        # saq's PartialTimersDict inherits its keys as required from TimersDict; every key is optional at run time.
        timers=timers or cast(PartialTimersDict, {
            "sweep": min(STUCK_SWEEP_SECONDS, max(1, settings.itdr_job_timeout_seconds // 3))}),
        # SAQ waits this long for every task, idle ones too, then cancels; a cancelled job is queued again.
        shutdown_grace_period_s=grace_seconds,
    )


async def run_worker(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM (SAQ's own handlers): running jobs finish, then the runtime closes."""
    # msal is synchronous: each token request (two at once per cold check) waits for Entra in a thread. asyncio's
    # default pool (cpu count + 4 threads) would make tokens, not the checks in flight, the limit of a cold sweep.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=token_threads(settings.itdr_worker_concurrency), thread_name_prefix="msal"))
    async with contextlib.AsyncExitStack() as stack:
        if settings.itdr_metrics_port is not None:
            stack.callback(metrics.serve_metrics(settings.itdr_metrics_port))
        runtime = await stack.enter_async_context(Runtime.open(settings, Mode.WORKER))
        queue = queue_for(runtime.redis, settings)
        await queue.connect()
        worker = build_worker(runtime, queue)
        log.info("itdr worker started (concurrency %d)", settings.itdr_worker_concurrency)
        await worker.start()  # returns on SIGINT or SIGTERM, after the running jobs finish


def run(settings: Settings) -> int:
    """`itdr worker` in the foreground until SIGINT or SIGTERM."""
    asyncio.run(run_worker(settings))
    return 0
