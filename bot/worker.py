"""`itdr worker`: a SAQ worker on the bot's Redis that sweeps watched tenants, announces drift and new catalog
revisions, and follows approved consents to their proof. Run any number, on any number of machines.

Jobs (see `bot.drift.sweep.JobName`):
- `sweep` (cron ITDR_SWEEP_CRON, unique across workers): queue a check of every watched tenant;
- `check_tenant`: check one tenant (Graph priority `low`), compare with its snapshot, record the change; a 429 or 503
  past the retries reschedules it after Retry-After (at most 3 times a sweep, then it counts as unknown);
- `finish_sweep`: announce the sweep's changes, one message per tenant, or one digest per channel beyond
  ITDR_DIGEST_THRESHOLD;
- `post_message`: post in a channel, at most one message a second per channel, 429s honoured, nothing dropped;
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
from saq import CronJob, Job, Worker
from saq.queue.redis import RedisQueue
from saq.types import PartialTimersDict
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.consent.service import is_satisfied
from bot.drift.pacing import ChannelPacer
from bot.drift.sweep import (
    MAX_RESCHEDULES,
    RESULT_TTL_SECONDS,
    SUMMARY_TIMEOUT_SECONDS,
    JobName,
    PatientQueue,
    PromptWorker,
    finish_now,
    queue_for,
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

POST_RETRIES = 8
POSTED_TTL_SECONDS = 2 * 24 * 3600
#: SAQ's check for jobs lost with a killed worker runs at most this often; with the job timeout it bounds the delay
#: before such a job runs again (75 + 30 s by default: within 2 minutes).
STUCK_SWEEP_SECONDS = 30


class Rescheduled(Exception):
    """Not a failure: Microsoft asked us to come back later (SAQ retries the same job after `retry_delay`)."""


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
    change, complete = await runtime.drift.sweep_tenant(tenant, report, now=datetime.now(UTC), sweep=sweep)
    if complete and sweep is not None:
        await finish_now(ctx["queue"], sweep)
    return change.kind.value if change is not None else "counted"


async def finish_sweep(ctx: dict[str, Any], *, sweep: str) -> int:
    """Announce the sweep's changes once; the number of tenants announced."""
    runtime = _runtime(ctx)
    per_channel = await runtime.drift.announcements(sweep, datetime.now(UTC))
    if not per_channel:
        return 0
    announced: set[str] = set()
    for channel, channel_changes in per_channel.items():
        if len(channel_changes) > runtime.settings.itdr_digest_threshold:
            await _queue_post(ctx["queue"], channel,
                              digest_message([change for change, _ in channel_changes], runtime.catalog),
                              f"{sweep}:{channel}:digest")
        else:
            for change, who in channel_changes:
                await _queue_post(ctx["queue"], channel, drift_message(change, runtime.catalog, who),
                                  f"{sweep}:{channel}:{change.tenant}", tenant=change.tenant)
        announced.update(change.tenant for change, _ in channel_changes)
    await runtime.drift.count_notified(sweep, len(announced))
    return len(announced)


async def _queue_post(queue: RedisQueue, channel: str, message: Message, notification: str, *,
                      tenant: str | None = None) -> None:
    await queue.enqueue(JobName.POST.value, key=f"post:{notification}", channel=channel, text=message.text,
                        blocks=message.blocks, notification=notification, tenant=tenant, retries=POST_RETRIES,
                        retry_delay=2.0, retry_backoff=60.0, timeout=60, ttl=RESULT_TTL_SECONDS)


async def post_message(ctx: dict[str, Any], *, channel: str, text: str, blocks: list[dict[str, Any]],
                       notification: str, tenant: str | None = None) -> str:
    """Post once (however often the job runs), paced per channel; a channel the bot cannot post in marks the
    subscription broken instead of failing the sweep."""
    runtime = _runtime(ctx)
    job: Job = ctx["job"]
    drift = runtime.drift
    if not await drift.claim_post(notification, POSTED_TTL_SECONDS):
        return "already posted"
    pacer: ChannelPacer = ctx["pacer"]
    await pacer.wait(channel)
    try:
        await ctx["poster"].chat_postMessage(channel=channel, text=text, blocks=blocks)
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "")
        if error in NOT_IN_CHANNEL:
            await drift.mark_broken(channel, tenant or "*", f"{error}: {NOT_IN_CHANNEL[error]}")
            return f"broken: {error}"
        await drift.release_post(notification)
        if error == "ratelimited":  # come back when Slack says, and hold the channel for every worker till then
            retry_after = float(exc.response.headers.get("Retry-After", 1))
            await pacer.hold(channel, retry_after)
            job.retry_delay = retry_after
            job.retry_backoff = False
            job.retries = max(job.retries, job.attempts + 1)  # a rate limit is never a reason to drop a message
            raise Rescheduled(channel) from None
        raise
    except Exception:
        await drift.release_post(notification)
        raise
    return "posted"


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
    """Announce a catalog revision no worker announced yet; True when this worker did."""
    drift = runtime.drift
    latest = runtime.catalog.latest.version
    before = await drift.claim_announcement(latest)
    if before is None:
        return False
    diff = runtime.catalog.diff(before, latest)
    lacking, watched = await drift.lacking({f"{item.api.value}.{item.name}" for item in diff.added})
    message = revision_message(diff, runtime.catalog, lacking=lacking, watched=watched)
    for channel in await drift.all_channels():
        await _queue_post(queue, channel, message, f"revision:{latest}:{channel}")
    await drift.start_sweep(queue, runtime.settings, now=datetime.now(UTC))
    log.info("announced revision %s (after %s) to watching channels", latest, before)
    return True


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
) -> Worker[Any]:
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

    monitor = OpsMonitor(runtime)
    return PromptWorker(
        queue,
        functions=[(JobName.CHECK.value, check_tenant), (JobName.FINISH.value, finish_sweep),
                   (JobName.POST.value, post_message), (JobName.SWEEP.value, sweep),
                   (JobName.CONSENTS.value, poll_consents), (FIX_RECHECK_JOB, fix_recheck),
                   (JobName.SUMMARY.value, summarise_fleet)],
        concurrency=settings.itdr_worker_concurrency,
        # A bounded wait for a job, within the queue client's socket timeout: an idle worker is not an outage.
        dequeue_timeout=QUEUE_BLOCK_SECONDS,
        cron_jobs=[
            CronJob(sweep, cron=settings.itdr_sweep_cron, unique=True, timeout=600),
            CronJob(poll_consents, cron=cron_every(settings.itdr_consent_poll_seconds), unique=True, timeout=300),
            CronJob(summarise_fleet, cron="* * * * *", unique=True, timeout=SUMMARY_TIMEOUT_SECONDS, retries=1),
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
    logging.getLogger("saq").addFilter(_QuietReschedules())
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
