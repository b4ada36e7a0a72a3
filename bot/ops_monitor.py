"""The worker's ops monitor: tells operators, once per event across every worker and restart, what will break the
bot before its users notice.

- the checking app's credential expiring within 30, 14, 7 and 1 days, and expired (at start, then hourly; one
  notice per threshold reached: a secret found 10 days from expiry is told once, for 14 days);
- the checking app's secret or the Slack token rejected (AADSTS7000215/7000222, invalid_auth), with the fix (once a
  day while it lasts): a check in this worker that met it, or the hourly token request in ITDR_HOME_TENANT;
- a scheduled sweep that did not start, or did not finish, on time.

Each notice is claimed in Redis first (SET NX, so one worker of many tells it), posted to ITDR_OPS_CHANNEL (or
logged at WARNING without one), and kept in the recent ops events that `itdr doctor` shows. A notice whose post
fails is released and told at the next check. The monitor also leaves the heartbeat and the sweep start/end times
`itdr doctor` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from croniter import croniter
from saq import Job, Queue
from saq.job import Status as JobStatus
from slack_sdk.errors import SlackApiError

from bot import metrics, ops
from bot.drift.sweep import JobName
from bot.runtime import Runtime
from bot.store import StateUnavailable
from catalog.words import counted
from handlers.blocks.ops import ops_message

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 60
CHECK_SECONDS = 3600
SWEEP_LATE_SECONDS = 900  # a sweep not started this long after its cron time is late
REJECTED_TTL_SECONDS = 24 * 3600  # a rejected credential is told again each day it lasts
_SLACK_REJECTED = ("invalid_auth", "token_revoked", "account_inactive", "not_authed")
#: Slack errors no retry mends (the bot is not in the channel, the token is bad): the WARNING line stands in.
_CANNOT_POST = frozenset({"not_in_channel", "channel_not_found", "is_archived", "missing_scope", *_SLACK_REJECTED})


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class OpsMonitor:
    def __init__(self, runtime: Runtime, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.store = ops.OpsStore(runtime.state)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.first_pass = asyncio.Event()  # set once the checks at start are done (tests and logs wait on it)
        self._task: asyncio.Task[None] | None = None
        self._queue: Queue | None = None
        self._stopping = asyncio.Event()

    # --- worker lifecycle (SAQ hooks) -----------------------------------------------------------------

    async def start(self, ctx: dict[str, Any]) -> None:
        ctx["ops"] = self
        self._queue = ctx["worker"].queue
        self._task = asyncio.create_task(self._run(), name="itdr-ops-monitor")

    async def stop(self, ctx: dict[str, Any]) -> None:
        # The event as well as the cancel: redis-py can report a call cancelled mid-flight as a fault, which the loop
        # outlives as a Redis outage; it then finds the event set instead of sleeping.
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def before_job(self, ctx: dict[str, Any]) -> None:
        job: Job | None = ctx.get("job")
        if job is not None and job.function == JobName.SWEEP.value:
            with contextlib.suppress(StateUnavailable):
                await self.store.sweep_event("started", self.clock())

    async def after_job(self, ctx: dict[str, Any]) -> None:
        """The sweep's end (for `itdr doctor` and the late-sweep notice) and the worker's metrics."""
        job: Job | None = ctx.get("job")
        if job is None:
            return
        complete = job.status is JobStatus.COMPLETE
        if job.function == JobName.FINISH.value and complete:
            with contextlib.suppress(StateUnavailable):
                now = self.clock()
                # The sweep's own record says when it started (a sweep started by hand or at start-up included).
                progress = await self.runtime.drift.progress(str((job.kwargs or {}).get("sweep")))
                started = progress.started if progress is not None else (await self.store.sweep_times())[0]
                if progress is not None:
                    await self.store.sweep_event("started", progress.started)
                await self.store.sweep_event("finished", now)
                if started is not None:
                    metrics.SWEEP_SECONDS.observe(max(0.0, (now - started).total_seconds()))
        elif job.function == JobName.CHECK.value and complete and (job.kwargs or {}).get("sweep"):
            metrics.SWEEP_TENANTS.inc()

    async def update_gauges(self) -> None:
        """What the fleet and the announcements look like, for /metrics (each worker, every pass)."""
        waiting, since = await self.runtime.drift.outbox_backlog()
        metrics.ANNOUNCEMENTS_WAITING.set(waiting)
        metrics.ANNOUNCEMENT_AGE_SECONDS.set((self.clock() - since).total_seconds() if since else 0)
        fleet = await self.runtime.drift.stored_fleet_summary()  # as the worker's summary job last stored it
        if fleet is not None:
            for verdict, count in fleet.verdicts.items():
                metrics.TENANTS.labels(verdict=verdict).set(count)
            metrics.TENANTS_ROLES_ENDING.set(fleet.ending.total)

    async def _run(self) -> None:
        last_check = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                await self.store.heartbeat(self.clock())
                if self._queue is not None:
                    metrics.QUEUE_DEPTH.set(await self._queue.count("queued"))
                await self.update_gauges()
                if loop.time() - last_check >= CHECK_SECONDS or not self.first_pass.is_set():
                    last_check = loop.time()
                    await self.check_credentials()
                await self.check_sweep()
                await self.check_noted()
                await self.check_reset()
            except StateUnavailable as exc:
                log.info("ops monitor: %s", exc)
            except Exception:  # the monitor must outlive any one failure
                log.exception("ops monitor check failed")
            self.first_pass.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), HEARTBEAT_SECONDS)

    # --- telling -------------------------------------------------------------------------------------------

    async def notify(self, notice: str, ttl: int, kind: str, title: str, detail: str, fix: str) -> bool:
        """Tell one notice once across every worker: True when this worker told it."""
        if not await self.store.claim_notice(notice, ttl):
            return False
        channel = self.settings.itdr_ops_channel
        if channel:
            message = ops_message(title, detail, fix)
            try:
                await self.runtime.slack.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
            except SlackApiError as exc:
                error = str(exc.response.get("error") or "")
                log.warning("%s: %s Fix: %s (not posted to ITDR_OPS_CHANNEL: %s)", title, detail, fix, error)
                if error not in _CANNOT_POST:  # transient: told again at the next check
                    await self.store.release_notice(notice)
                    return False
        else:
            log.warning("%s: %s Fix: %s", title, detail, fix)
        await self.store.record_event(ops.OpsEvent(self.clock(), kind, f"{title}: {detail}"))
        return True

    # --- checks ------------------------------------------------------------------------------------------------

    async def check_credentials(self) -> None:
        """The Slack token, and the checking app's credential: rejected, expiring or expired."""
        settings = self.settings
        now = self.clock()
        today = now.strftime("%Y-%m-%d")
        if settings.slack_bot_token is not None:
            slack = await ops.probe_slack(settings)
            if slack.error in _SLACK_REJECTED:
                await self.notify(f"rejected:slack:{today}", REJECTED_TTL_SECONDS, "credential-rejected",
                                  "Slack rejects the bot token", f"Slack answered {slack.error} to auth.test.",
                                  ops.SLACK_TOKEN_FIX)
        if not settings.readiness_configured:
            return
        certificate = settings.itdr_client_certificate
        if certificate is not None:
            with contextlib.suppress(OSError, ValueError):
                await self._expiry("client certificate", ops.certificate_expiry(certificate), now,
                                   ops.CERTIFICATE_FIX)
        if not settings.itdr_home_tenant:
            return
        probe = await ops.probe_home_tenant(settings)
        error = probe.token_error
        if error is not None and error.aadsts in ops.REJECTED_SECRET_CODES:
            await self._secret_rejected(error.aadsts, str(error), today)
        elif certificate is None and (end := ops.secret_end(settings, probe)) is not None:
            await self._expiry("client secret", end, now, ops.SECRET_FIX)

    async def check_noted(self) -> None:
        """What this worker's own checks met since the last look: our secret refused by Entra."""
        if (seen := ops.take_rejected_secret()) is None:
            return
        aadsts, message = seen
        today = self.clock().strftime("%Y-%m-%d")
        await self._secret_rejected(aadsts, message, today)

    async def _secret_rejected(self, aadsts: int | None, message: str, today: str) -> None:
        await self.notify(f"rejected:microsoft:{aadsts}:{today}", REJECTED_TTL_SECONDS, "credential-rejected",
                          "Entra ID rejects the checking app's secret",
                          f"{message} Every readiness check and sweep fails until it is replaced.", ops.SECRET_FIX)

    async def _expiry(self, what: str, end: dt.datetime, now: dt.datetime, fix: str) -> None:
        threshold = ops.threshold_crossed(end, now)
        if threshold is None:
            return
        # The end date names the credential: a renewed one starts its own notices.
        notice = f"expiry:{what}:{int(end.timestamp())}:{threshold}"
        ttl = int((end - now).total_seconds()) + 60 * 86400
        if threshold == 0:
            title, detail = (f"The checking app's {what} has expired",
                             f"It expired on {_when(end)}: every readiness check and sweep fails (AADSTS7000222).")
        else:
            left = ops.days_left(end, now)
            title, detail = (f"The checking app's {what} expires in {counted(max(1, round(left)), 'day')}",
                             f"It ends on {_when(end)}; then every readiness check and sweep fails.")
        await self.notify(notice, ttl, "credential-expiry", title, detail, fix)

    async def check_reset(self) -> None:
        """Redis lost the bot's state (a flush, a failover to an empty replica, an eviction) since this worker
        started: told once per reset, across workers (the notice is claimed in the new state)."""
        reset = await self.runtime.state_reset()
        if reset is None:
            return
        await self.notify(f"state-reset:{reset.value}", 30 * 86400, "state-reset", "Redis lost the bot's state",
                          reset.reset_sentence(),
                          "make Redis keep its data (appendonly yes, maxmemory-policy noeviction: `itdr doctor` "
                          "checks both), then watch the tenants again (`itdr tenants import FILE.csv`)")

    async def check_sweep(self) -> None:
        """A scheduled sweep that did not start, or did not finish, on time (only while tenants are watched)."""
        settings = self.settings
        now = self.clock()
        if not await self.runtime.drift.tenant_ids():
            return
        started, finished = await self.store.sweep_times()
        due = croniter(settings.itdr_sweep_cron, now).get_prev(dt.datetime)
        # Only once a sweep has run: a fresh install (or one whose sweeps were all started by hand) is not late.
        if started is not None and started < due and (now - due).total_seconds() > SWEEP_LATE_SECONDS:
            await self.notify(f"sweep-late:start:{int(due.timestamp())}", 7 * 86400, "sweep-late",
                              "A scheduled sweep did not start",
                              f"The sweep due {_when(due)} ({settings.itdr_sweep_cron}) has not started.",
                              "look at the workers' logs; make sure `itdr worker` runs and can reach Redis")
        finish_by = settings.itdr_sweep_spread_seconds + SWEEP_LATE_SECONDS
        if started is not None and (finished is None or finished < started) and (
                now - started).total_seconds() > finish_by:
            await self.notify(f"sweep-late:finish:{int(started.timestamp())}", 7 * 86400, "sweep-late",
                              "A sweep did not finish on time",
                              f"The sweep started {_when(started)} has not finished after {finish_by // 60} "
                              "minutes.", "look at the workers' logs for failing check_tenant jobs")
