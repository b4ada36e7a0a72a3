"""Fleet sweeps on SAQ over Redis: one check job per watched tenant, keyed by tenant so a tenant is never queued
twice, start times spread over ITDR_SWEEP_SPREAD_SECONDS, and a finishing job that announces what changed.

Any number of `itdr worker` processes on any number of machines take jobs from the same queue. A job lost with a
killed worker is found by SAQ's sweep of stuck jobs (its timeout past, checked every `STUCK_SWEEP_SECONDS`) and
runs again; its change is recorded once (see `DriftStore.update_snapshot`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from redis.exceptions import RedisError
from saq import Job, Worker
from saq.queue.redis import RedisQueue
from saq.types import WorkerInfo

from bot.drift.store import DriftStore
from bot.settings import Settings
from bot.store import RedisConnections, redis_fault

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A tenant throttled past the retries is rescheduled after Retry-After at most this often in one sweep.
MAX_RESCHEDULES = 3
#: Job attempts: the reschedules, plus room for a worker lost mid-job or two.
JOB_RETRIES = MAX_RESCHEDULES + 3
FINISH_GRACE_SECONDS = 300  # the fallback finish runs this long after the last scheduled start
RESULT_TTL_SECONDS = 60  # finished jobs are kept this long (results live in our own keys)
SUMMARY_TIMEOUT_SECONDS = 600  # the fleet summary streams through every tenant: 250,000 take well under this
#: Finishing marks the sweep finished and queues one delivery per channel with announcements: seconds even for
#: thousands of channels; it is idempotent, so a finish cut short runs again.
FINISH_TIMEOUT_SECONDS = 300
FINISH_RETRIES = 5
#: A channel's delivery posts at most ITDR_DIGEST_THRESHOLD messages (and revisions) a second apart; it renews its
#: lease before each, and one cut short leaves the rest pending for the next.
DELIVER_TIMEOUT_SECONDS = 300
DELIVER_RETRIES = 8


class JobName(StrEnum):
    CHECK = "check_tenant"
    FINISH = "finish_sweep"
    DELIVER = "deliver_channel"
    DELIVER_PENDING = "deliver_pending"
    LEGACY_POST = "post_message"  # queued by the version before the outbox; taken over (see bot.worker)
    SWEEP = "sweep"
    CONSENTS = "poll_consents"
    SUMMARY = "summarise_fleet"


async def summarise_soon(queue: RedisQueue) -> None:
    """Bring the fleet summary up to date now (after an import), instead of at the worker's next minute."""
    await queue.enqueue(JobName.SUMMARY.value, key=JobName.SUMMARY.value, timeout=SUMMARY_TIMEOUT_SECONDS,
                        retries=1, ttl=RESULT_TTL_SECONDS)


#: SAQ's sweep of lost jobs (saq/queue/redis.py `sweep`), except for a job in the active list whose status is still
#: `queued`: a worker has just moved it there (BLMOVE) and not yet marked it active, which takes a moment more when
#: its event loop is busy. SAQ takes such a job for lost at once, aborts and retries it while the worker runs it: the
#: tenant is checked twice, or its check is cancelled and never run, and the sweep waits for its fallback finish.
#: Here it is left for one sweep: lost only if it is still there, still `queued`, at the next one.
_SWEEP_SCRIPT = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    local seen = KEYS[1] .. ':unclaimed'
    local unclaimed = {}
    for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        local job = redis.call('GET', id)
        local ok, data = false, nil
        if job then ok, data = pcall(cjson.decode, job) end
        if ok and type(data) == 'table' and data['status'] == 'queued' and redis.call('SISMEMBER', seen, id) == 0 then
            table.insert(unclaimed, id)
        else
            table.insert(id_jobs, {id, job})
        end
    end
    redis.call('DEL', seen)
    if #unclaimed > 0 then
        redis.call('SADD', seen, unpack(unclaimed))
        redis.call('EXPIRE', seen, 10 * tonumber(ARGV[1]))
    end
end
return id_jobs
"""


class PatientQueue(RedisQueue):
    """SAQ's Redis queue that waits out a Redis outage: a worker's loops pause and retry with backoff, one log line
    when Redis goes away and one when it is back, instead of spinning and logging every second. Its sweep of lost
    jobs leaves alone a job a worker has only just taken (see `_SWEEP_SCRIPT`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._down_since: float | None = None
        self._delay = 0.5
        #: Set by a stopping worker: a wait for a job ends at once. Cancelling it is not enough: redis-py may take
        #: the cancellation of a blocking read for a dropped connection and retry the read (up to its 10 s).
        self.stopping = asyncio.Event()
        # SAQ's `sweep` registers its script on first use unless one is there: this one (same keys and result).
        self._cleanup_script = self.redis.register_script(_SWEEP_SCRIPT)

    async def _patiently(self, call: Awaitable[T], default: T) -> T:
        try:
            result = await call
        except (RedisError, OSError) as exc:
            task = asyncio.current_task()
            if self.stopping.is_set() or (task is not None and task.cancelling()):
                # redis-py can report a cancelled read as a connection fault: it is the worker stopping, and an
                # upkeep loop that took it for an outage would sleep on (up to its 25 s) before it noticed.
                raise asyncio.CancelledError from exc
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("Redis %s: the worker waits and retries", redis_fault(exc))
            await asyncio.sleep(self._delay * (0.5 + random.random()))
            self._delay = min(self._delay * 2, 30.0)
            return default
        if self._down_since is not None:
            log.warning("Redis is back after %.0f s", time.monotonic() - self._down_since)
            self._down_since, self._delay = None, 0.5
        return result

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:  # noqa: ASYNC109
        if self.stopping.is_set():
            return None
        wait = asyncio.ensure_future(self._patiently(super().dequeue(timeout, poll_interval), None))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({wait, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not wait.done():  # left to end by itself (a job it takes now stays `queued`: swept and requeued)
                wait.cancel()
                wait.add_done_callback(_forget)
        return wait.result() if wait.done() and not wait.cancelled() else None

    async def schedule(self, lock: int = 1) -> list[str]:
        return await self._patiently(super().schedule(lock), [])

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        return await self._patiently(super().sweep(lock, abort), [])

    async def write_worker_info(self, worker_id: str, info: WorkerInfo, ttl: int) -> None:
        await self._patiently(super().write_worker_info(worker_id, info, ttl), None)


class PromptWorker(Worker[Any]):
    """SAQ's worker, stopping at once when idle: on SIGTERM SAQ waits the whole grace period for every task, its
    upkeep loops asleep and its waits for a job too, then warns that "some tasks did not finish". Those have nothing
    to finish: the waits end on the queue's `stopping` event, the upkeep loops are cancelled and not waited for, and
    the grace period is left to the jobs that run. (A job moved by an abandoned wait in the instant it ended stays
    `queued` in the active list: the sweep of lost jobs requeues it.)"""

    def __init__(self, queue: PatientQueue, *args: Any, **kwargs: Any) -> None:
        super().__init__(queue, *args, **kwargs)
        self._patient = queue
        self._upkeep: list[asyncio.Task[None]] = []
        self.started = asyncio.Event()  # its startup ran (a revision announced, a promised sweep queued)

    async def upkeep(self) -> list[asyncio.Task[None]]:
        self._upkeep = await super().upkeep()  # SAQ starts upkeep right after the startup hooks
        self.started.set()
        return self._upkeep

    async def stop(self) -> None:
        self.event.set()
        self._patient.stopping.set()
        for task in self._upkeep:
            task.cancel()
        # An upkeep loop whose cancellation redis-py swallowed finishes its Redis call (a scheduled cron job
        # written after the worker stopped, seen in the tests) and goes to its sleep (up to 25 s): waited for
        # briefly, then cancelled in that sleep, so nothing it does outlives `stop`; never left to SAQ's wait.
        if self._upkeep:
            _, pending = await asyncio.wait(self._upkeep, timeout=0.2)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        self.tasks.difference_update(self._upkeep)
        await super().stop()


def _forget(task: asyncio.Future[Any]) -> None:
    """Retrieve what an abandoned wait ended with (nothing waits for it any more)."""
    if not task.cancelled():
        task.exception()


def queue_for(redis: RedisConnections, settings: Settings) -> PatientQueue:
    """The job queue, on its own Redis client (SAQ blocks on Redis; the state client has short timeouts)."""
    return PatientQueue(redis.queue_client(), name=f"{settings.redis_prefix}jobs")


def _offset(tenant: str, sweep: str, spread: int) -> int:
    """A stable start offset per tenant and sweep, spread evenly over `spread` seconds."""
    if spread <= 0:
        return 0
    digest = hashlib.sha256(f"{sweep}\x1f{tenant}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % spread


async def start_sweep(queue: RedisQueue, store: DriftStore, settings: Settings, *, now: datetime,
                      spread: int | None = None) -> str:
    """Queue a check of every watched tenant, their starts spread over `spread` seconds (by default
    ITDR_SWEEP_SPREAD_SECONDS, for the scheduled sweep); the sweep's id."""
    tenants = await store.tenant_ids()
    sweep = f"{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    await store.start_sweep(sweep, len(tenants), now)
    spread = settings.itdr_sweep_spread_seconds if spread is None else spread
    start = int(now.timestamp())
    queued = 0
    for tenant in tenants:
        offset = _offset(tenant, sweep, spread)
        job = await queue.enqueue(
            JobName.CHECK.value, key=f"check:{tenant}", tenant=tenant, sweep=sweep,
            scheduled=start + offset if offset else 0, timeout=settings.itdr_job_timeout_seconds, retries=JOB_RETRIES,
            ttl=RESULT_TTL_SECONDS,
        )
        queued += job is not None  # a tenant still queued from an earlier sweep is not queued again
    if queued != len(tenants):
        await store.set_sweep_size(sweep, queued)
    # Normally the last check finishes the sweep; this one finishes it whatever happened to the others.
    await queue.enqueue(JobName.FINISH.value, key=f"finish:{sweep}", sweep=sweep,
                        scheduled=start + spread + FINISH_GRACE_SECONDS, timeout=FINISH_TIMEOUT_SECONDS,
                        retries=FINISH_RETRIES, ttl=RESULT_TTL_SECONDS)
    if queued == 0:
        await finish_now(queue, sweep)
    return sweep


@dataclass(frozen=True)
class SweepStart:
    id: str
    already_running: bool  # another sweep was under way: this is that one, nothing new was queued


#: Two people starting a sweep at the same moment: the second waits this long at most for the first one's id.
_STARTING_SECONDS = 30


async def sweep_now(queue: RedisQueue, store: DriftStore, settings: Settings, *, now: datetime,
                    spread: int = 0) -> SweepStart:
    """A sweep a person asked for: it starts at once (unless `spread`), or, when a sweep is already under way, that
    one (a second sweep would find every tenant's check still queued and count none of them)."""
    if (running := await running_sweep(store, settings, now)) is not None:
        return SweepStart(running, already_running=True)
    claimed = await store.claim("sweep-starting", _STARTING_SECONDS)
    if not claimed:  # someone is starting one this very moment: theirs, once its id is recorded
        deadline = time.monotonic() + _STARTING_SECONDS
        while time.monotonic() < deadline:
            if (running := await running_sweep(store, settings, now)) is not None:
                return SweepStart(running, already_running=True)
            await asyncio.sleep(0.1)
    try:
        # Looked at again under the claim: a sweep started since the first look, its claim already let go, is the
        # one (two `itdr sweep` at once both started one without this second look).
        if claimed and (running := await running_sweep(store, settings, now)) is not None:
            return SweepStart(running, already_running=True)
        return SweepStart(await start_sweep(queue, store, settings, now=now, spread=spread), already_running=False)
    finally:
        if claimed:
            await store.release("sweep-starting")


async def running_sweep(store: DriftStore, settings: Settings, now: datetime) -> str | None:
    """The sweep under way, if any: the last one, unfinished, and not past the time its fallback finish would have
    run had any worker been there."""
    last = await store.last_sweep()
    progress = await store.progress(last) if last else None
    if progress is None or progress.done:
        return None
    longest = settings.itdr_sweep_spread_seconds + FINISH_GRACE_SECONDS + settings.itdr_job_timeout_seconds
    return progress.id if (now - progress.started).total_seconds() < longest else None


async def finish_now(queue: RedisQueue, sweep: str) -> None:
    await queue.enqueue(JobName.FINISH.value, key=f"finish-now:{sweep}", sweep=sweep, timeout=FINISH_TIMEOUT_SECONDS,
                        retries=FINISH_RETRIES, ttl=RESULT_TTL_SECONDS)


async def deliver_soon(queue: RedisQueue, channel: str) -> None:
    """Deliver the channel's pending announcements now. Never deduplicated by key: a delivery already running may
    have read the channel before the newest entry; the channel's lease keeps two from posting at once."""
    await queue.enqueue(JobName.DELIVER.value, key=f"deliver:{channel}:{secrets.token_hex(4)}", channel=channel,
                        timeout=DELIVER_TIMEOUT_SECONDS, retries=DELIVER_RETRIES, retry_delay=2.0,
                        retry_backoff=60.0, ttl=RESULT_TTL_SECONDS)
