"""Watching tenants and noticing drift: engine only (state in `DriftStore`, checks through the readiness service,
who-did-it from the directory audit). The worker and the listeners render and post what it returns."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from saq.queue.redis import RedisQueue

from bot.drift import model
from bot.drift.audit import Revocations, revocations
from bot.drift.fleet import PAGE, Fleet, tally
from bot.drift.model import Acknowledgement, Change, ChangeKind, Snapshot
from bot.drift.outbox import Pending
from bot.drift.store import DriftStore, Recorded, SweepProgress, WatchedTenant
from bot.drift.sweep import deliver_soon, start_sweep, sweep_now
from bot.microsoft.http import Priority
from bot.microsoft.tenant import is_guid
from bot.readiness.model import CheckStatus, Report
from bot.readiness.service import CheckRequest, ReadinessService, TenantUnresolved
from bot.settings import Settings
from catalog import Catalog, Kind

log = logging.getLogger(__name__)

#: Up to this many tenants, a summary out of date is computed on the spot (a fraction of the ack's time).
SMALL_FLEET = 500
#: The worker recomputes the summary at least this often, changed or not ("not read for more than a day" moves).
SUMMARY_REFRESH = timedelta(minutes=10)
#: Tenants listed by `/itdr watching` (the rest are counted, `itdr tenants --json` lists them all).
WATCHING_LISTED = 100
SERVICE_PRINCIPAL_CHECK = "service_principal"  # the readiness check that the app is present and enabled


SNOOZE = timedelta(hours=24)


@dataclass(frozen=True)
class Watching:
    """One tenant as a channel watches it."""

    tenant: WatchedTenant
    snapshot: Snapshot | None
    broken: str | None
    snoozed_until: datetime | None
    channel: str

    @property
    def acknowledged(self) -> Acknowledgement | None:
        return self.snapshot.acknowledged_in(self.channel) if self.snapshot is not None else None


class CannotWatch(Exception):
    """The tenant cannot be watched; str(exc) says why, and nothing was stored."""


class DriftService:
    def __init__(self, catalog: Catalog, store: DriftStore, readiness: ReadinessService | None,
                 queue: Callable[[], RedisQueue] | None = None) -> None:
        self.catalog = catalog
        self.store = store
        self.readiness = readiness
        self.queue = queue  # the workers' job queue, to deliver announcements at once

    def _readiness(self) -> ReadinessService:
        if self.readiness is None:
            raise CannotWatch("Watching tenants needs the readiness check, which is not configured here: an "
                              "operator sets ITDR_CLIENT_ID, ITDR_CLIENT_SECRET and ITDR_TARGET_APP_ID.")
        return self.readiness

    async def resolve(self, check: CheckRequest) -> str:
        """The tenant's GUID; CannotWatch for a tenant Microsoft does not know."""
        try:
            return await self._readiness().tenant_guid(check.tenant)
        except TenantUnresolved as exc:
            raise CannotWatch(str(exc)) from None

    async def check(self, tenant_id: str, *, priority: Priority, fresh: bool = True) -> Report:
        readiness = self._readiness()
        return await readiness.run(readiness.request(tenant_id), fresh=fresh, priority=priority)

    async def watch(self, tenant_id: str, report: Report, channel: str, by: str, *, now: datetime) -> bool:
        """Subscribe `channel` and record `report`: the tenant's first snapshot (a baseline: nothing to say), or its
        latest."""
        tenant = WatchedTenant(id=tenant_id, domain=report.tenant.domain, name=report.tenant.name, added_by=by,
                               added_at=now)
        new = await self.store.watch(tenant, channel)
        # A tenant other channels watch may have changed since their last sweep: they are told (and not this
        # channel, whose answer is the verdict itself). Delivered by the workers' periodic look.
        recorded = await self.record(tenant_id, report, now=now, sweep=None, skip_channel=channel)
        if recorded is not None:
            await self.deliver_soon(recorded.due)
        return new

    async def record(self, tenant_id: str, report: Report, *, now: datetime, sweep: str | None,
                     skip_channel: str | None = None) -> Recorded | None:
        """A reading of one tenant: what changed, and for drift who did it (or why that could not be read),
        recorded with its announcements (and, in a sweep, the tenant counted as checked) in one step. The
        directory audit is read first, from the change the snapshot implies now, because the sweep may be
        announced as soon as its last tenant is counted. None when this sweep already counted the tenant."""
        previous = await self.store.snapshot(tenant_id)
        _, preview = model.observe(previous, report, now=now)
        who = await self.who(preview, report.app_object_id) if preview.drifted else None
        return await self.store.update_snapshot(
            tenant_id, lambda snapshot: model.observe(snapshot, report, now=now), sweep=sweep, who=who, now=now,
            skip_channel=skip_channel)

    async def sweep_tenant(self, tenant_id: str, report: Report, *, now: datetime,
                           sweep: str | None) -> tuple[Recorded | None, bool]:
        """One tenant's part of a sweep: its change recorded with its announcements (see `record`), a tenant
        watched by domain (or read for the first time) filed under its GUID and name; and whether the sweep is now
        complete (every tenant counted, not finished yet), so the caller can finish it. The announcements of a
        change recorded after its sweep finished (or outside any) are due at once: `Recorded.due`."""
        recorded = await self.record(tenant_id, report, now=now, sweep=sweep)
        change = recorded.change if recorded is not None else None
        if not is_guid(tenant_id) or (change is not None and change.kind is ChangeKind.baseline):
            await self.store.settle(tenant_id, report.tenant)
        if sweep is None:
            return recorded, False
        progress = await self.store.progress(sweep)
        return recorded, progress is not None and not progress.done and progress.checked >= progress.tenants

    async def recheck(self, tenant_id: str, channel: str, *, now: datetime
                      ) -> tuple[Report, Change | None, Revocations | None]:
        """A Re-check clicked in `channel`: a fresh check, the change recorded, its announcement promised to every
        other watching channel (delivered at once) and returned, with who did it, for `channel` to show."""
        report = await self.check(tenant_id, priority=Priority.HIGH)
        recorded = await self.record(tenant_id, report, now=now, sweep=None, skip_channel=channel)
        if recorded is None:
            return report, None, None
        await self.deliver_soon(recorded.due)
        return report, recorded.change, recorded.who

    async def start_sweep(self, queue: RedisQueue, settings: Settings, *, now: datetime) -> str:
        return await start_sweep(queue, self.store, settings, now=now)

    async def progress(self, sweep: str) -> SweepProgress | None:
        return await self.store.progress(sweep)

    async def finish(self, sweep: str, now: datetime) -> bool:
        """Mark the sweep finished (its announcements may go out); True the first time. Changes an older version
        recorded for it are taken over first."""
        await self.store.adopt_legacy(sweep, now)
        return await self.store.finish(sweep, now)

    async def promise_message(self, channel: str, text: str, blocks: list[dict[str, Any]], key: str,
                              now: datetime) -> None:
        """A prepared message for one channel, recorded as a pending announcement (a post the version before the
        outbox queued as a job, taken over at a deploy)."""
        if await self.store.legacy_posted(key):
            return  # that version claimed it before posting: as it would, taken as posted
        await self.store.promise(Pending(id=f"message:{key}", channel=channel, recorded=now, text=text,
                                         blocks=blocks))

    # --- delivering announcements (see bot.drift.outbox) ------------------------------------------------

    async def deliver_soon(self, channels: Iterable[str]) -> None:
        """Have a worker deliver these channels' announcements now (the worker's periodic look would, within a
        minute; this is sooner). A queue that cannot be reached leaves them for that look."""
        if self.queue is None:
            return
        try:
            for channel in sorted(set(channels)):
                await deliver_soon(self.queue(), channel)
        except (RedisError, OSError) as exc:  # recorded all the same: the periodic look delivers them
            log.warning("could not queue the delivery of announcements now (%s)", type(exc).__name__)

    async def outbox_channels(self, *, unleased: bool = False) -> list[str]:
        return await self.store.outbox_channels(unleased=unleased)

    async def outbox_backlog(self) -> tuple[int, datetime | None]:
        """How many channels have announcements waiting, and since when the oldest waits."""
        return await self.store.outbox_backlog()

    async def deliverable(self, channel: str, now: datetime) -> tuple[list[Pending], list[Pending]]:
        return await self.store.deliverable(channel, now)

    async def delivered(self, channel: str, entries: list[Pending]) -> None:
        await self.store.done(channel, entries, delivered=True)

    async def drop(self, channel: str, entries: list[Pending], *, broken: str | None = None) -> None:
        """Give up on entries: a week old, unwatched or snoozed, or (`broken`) a channel the bot cannot post in,
        whose subscriptions are then marked broken."""
        if broken is not None:
            for tenant in {e.watched or e.tenant or "*" for e in entries} or {"*"}:
                await self.store.mark_broken(channel, tenant, broken)
        await self.store.done(channel, entries, delivered=False)

    async def lease(self, channel: str, seconds: float) -> str | None:
        return await self.store.lease(channel, seconds)

    async def renew_lease(self, channel: str, token: str, seconds: float) -> bool:
        return await self.store.renew_lease(channel, token, seconds)

    async def release_lease(self, channel: str, token: str) -> None:
        await self.store.release_lease(channel, token)

    async def announce_revision(self, latest: str,
                                message: Callable[[str], Awaitable[tuple[str, list[dict[str, Any]]]]],
                                now: datetime) -> str | None:
        """Record `latest` as announced with its announcement for every watching channel; the revision announced
        before when this caller did (None: nothing to announce, or another process had)."""
        return await self.store.announce_revision(latest, message, now)

    async def sweep_owed(self, queue: RedisQueue, settings: Settings, *, now: datetime) -> str | None:
        """Queue the sweep a revision's announcement promised, unless one is queued already (it is marked done only
        once queued: a worker dying in between leaves it to the next); the revision it was owed for."""
        revision = await self.store.sweep_owed()
        if revision is None:
            return None
        await sweep_now(queue, self.store, settings, now=now, spread=settings.itdr_sweep_spread_seconds)
        await self.store.sweep_queued(revision)
        return revision

    async def lacking(self, checks: set[str]) -> tuple[int, int]:
        """How many watched tenants lack any of `checks` (never read counts as lacking), of how many watched."""
        tenants = await self.store.tenant_ids()
        snapshots = await self.store.snapshots(tenants)
        lacking = sum(1 for tenant in tenants if any(
            (snapshot := snapshots.get(tenant)) is None or snapshot.statuses.get(check) is not CheckStatus.passed
            for check in checks))
        return lacking, len(tenants)

    async def all_channels(self) -> list[str]:
        return await self.store.all_channels()

    async def tenant_ids(self) -> list[str]:
        return await self.store.tenant_ids()

    async def channels_of(self, tenant: str) -> list[str]:
        return await self.store.channels_of(tenant)

    async def unwatch_matching(self, tenant: str, channel: str | None) -> tuple[int, str | None]:
        """End the subscriptions of a tenant named by GUID or domain (in `channel`, or everywhere): how many, and
        the tenant's label (None when nothing matched)."""
        matches = await self.store.find(tenant)
        ended = sum([await self.store.unwatch(t.id, channel) for t in matches])
        return ended, matches[0].label if matches else None

    async def unwatch(self, tenant_id: str, channel: str) -> int:
        return await self.store.unwatch(tenant_id, channel)

    async def who(self, change: Change, app_object_id: str | None) -> Revocations | None:
        """The directory audit behind revoked permissions and roles, or the app disabled or deleted; None when
        nothing revocable drifted."""
        revocable = (Kind.application_permission, Kind.delegated_permission, Kind.directory_role)
        items = [self.catalog.get(item.catalog_name) for item in change.drifted if item.catalog_name]
        app_lost = any(item.check == SERVICE_PRINCIPAL_CHECK for item in change.drifted)
        if not app_lost and not any(item is not None and item.kind in revocable for item in items):
            return None
        if self.readiness is None or change.since is None:
            return Revocations(error="the ITDR app's service principal was not read, so its audit cannot be "
                                     "looked up")
        return await revocations(self.readiness.clients, change.tenant, app_object_id,
                                 change.since - timedelta(minutes=5), now=change.at,
                                 app_id=self.readiness.target_app_id)

    async def acknowledge(self, tenant: str, channel: str, by: str, reason: str, *, now: datetime
                          ) -> Snapshot | None:
        """What the tenant lacks now is acknowledged in `channel` (not announced there again until it recovers);
        None when the tenant was never read."""
        return await self.store.set_snapshot(tenant, lambda s: model.acknowledge(s, channel, by, reason, now=now),
                                             "record the acknowledgement")

    async def snooze(self, tenant: str, channel: str, *, now: datetime) -> datetime | None:
        """`channel` hears nothing of the tenant for SNOOZE (other channels as usual); until when, or None when
        the tenant was never read."""
        if await self.store.snapshot(tenant) is None:
            return None
        until = now + SNOOZE
        await self.store.snooze(channel, tenant, until, now)
        return until

    async def watching(self, channel: str, *, limit: int = WATCHING_LISTED) -> tuple[list[Watching], int]:
        """The first `limit` tenants a channel watches by name, each with its snapshot, why posting there broke
        (if it did) and the channel's snooze, and how many it watches in all. Only the channel's tenants are read,
        and only the listed ones' snapshots."""
        ids = await self.store.tenants_of(channel)
        tenants = (await self.store.tenants(ids))[:limit]
        listed = [t.id for t in tenants]
        snapshots = await self.store.snapshots(listed)
        broken = await self.store.broken_of(channel, listed)
        snoozed = await self.store.snoozed_of(channel, listed)
        return [Watching(t, snapshots.get(t.id), broken.get(t.id), snoozed.get(t.id), channel)
                for t in tenants], len(ids)

    async def fleet(self, now: datetime, *, limit: int | None = PAGE) -> Fleet:
        """The fleet computed now, streaming over every watched tenant (`itdr fleet --json`: limit None, every
        name)."""
        generation = await self.store.fleet_generation()
        return await tally(self.store.fleet_batches(), now=now, limit=limit, generation=generation)

    async def summarise_fleet(self, now: datetime) -> Fleet | None:
        """The worker's job: compute and store the summary when the fleet changed since; None when it had not."""
        raw, generation = await self.store.fleet_summary()
        stored = Fleet.load(raw, generation=generation) if raw is not None else None
        # Unchanged and recent: nothing to do. Time alone also dates it: a tenant unread for a day becomes stale.
        if stored is not None and stored.current and now - stored.computed_at < SUMMARY_REFRESH:
            return None
        fleet = await tally(self.store.fleet_batches(), now=now, generation=generation)
        await self.store.save_fleet_summary(fleet.dump())
        return fleet

    async def stored_fleet_summary(self) -> Fleet | None:
        """The summary the worker last computed, as stored (never computed here: one read)."""
        raw, generation = await self.store.fleet_summary()
        return Fleet.load(raw, generation=generation) if raw is not None else None

    async def fleet_summary(self, now: datetime) -> Fleet:
        """For App Home and `/itdr fleet`: the stored summary, one read. A small fleet's out-of-date summary (or a
        fleet's first) is computed on the spot; a big one is shown as of when the worker computed it."""
        raw, generation = await self.store.fleet_summary()
        if raw is not None:
            fleet = Fleet.load(raw, generation=generation)
            if fleet.current or fleet.tenants > SMALL_FLEET:
                return fleet
        fleet = await tally(self.store.fleet_batches(), now=now, generation=generation)
        await self.store.save_fleet_summary(fleet.dump())
        return fleet
