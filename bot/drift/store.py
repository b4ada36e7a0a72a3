"""Watched tenants, snapshots and sweeps in Redis: state that fails closed (StateUnavailable when Redis is down).

Keys (under the Redis prefix):
    watch:tenants                 hash: tenant id → the tenant as it was watched (JSON)
    watch:tenant:{tenant}         set: channels watching the tenant
    watch:channel:{channel}       set: tenants the channel watches
    watch:broken                  hash: "{channel} {tenant}" → why posting failed (the subscription is broken)
    snap:{tenant}                 the tenant's last snapshot (JSON, packed)
    sweep:{id}                    hash: tenants, started, finished, changed, unknown, pending (announcements not
                                  delivered yet)
    sweep:{id}:done               set: tenants checked in the sweep (a job run twice counts once)
    sweep:{id}:finished           set once the sweep is finished: its announcements may go out
    sweep:{id}:notified           set: tenants whose change Slack accepted in at least one channel
    sweep:{id}:changes, …:who:{t} written by the version before the outbox; taken over at the sweep's finish
    sweep:last                    the id of the latest sweep
    outbox:…, snooze:…            pending announcements and per-channel snoozes (see `bot.drift.outbox`)
    catalog:announced             the latest catalog revision announced to watching channels
    catalog:sweep-owed            the revision whose announcement promised a sweep not queued yet (7 days)
    fleet:generation              counter: bumped by every watch, unwatch, import and snapshot write
    fleet:summary                 the fleet summary the worker computed (JSON, one page of names per list)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pydantic import BaseModel
from redis.asyncio.client import Pipeline

from bot.drift.audit import Revocations
from bot.drift.model import Change, Snapshot
from bot.drift.outbox import (
    DONE_SCRIPT,
    MAX_AGE,
    RELEASE_SCRIPT,
    RENEW_SCRIPT,
    Outbox,
    Pending,
    change_entry_id,
    new_token,
)
from bot.microsoft.tenant import is_guid
from bot.readiness.model import TenantInfo, Verdict
from bot.store import State, pack, unpack

SWEEP_TTL_SECONDS = 7 * 24 * 3600
#: A sweep's announcements go out at its finish; if no finish ever ran (every finish job lost), this long after they
#: were recorded (past the longest spread, a day, and the fallback finish).
UNFINISHED_SWEEP = timedelta(hours=25)
#: A revision's promised sweep is owed this long at most (a worker starting later sweeps on schedule anyway).
_SWEEP_OWED_SECONDS = 7 * 24 * 3600
FLEET_BATCH = 1000  # tenants read per round trip when the fleet is summarised
#: Each set's members joined by spaces: one reply per tenant instead of one command and reply each (channel ids
#: hold no space), which is most of what listing 250,000 tenants costs.
_JOINED_MEMBERS = ("local out = {} for i, key in ipairs(KEYS) do "
                   "out[i] = table.concat(redis.call('SMEMBERS', key), ' ') end return out")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class WatchedTenant(BaseModel):
    id: str
    domain: str | None = None
    name: str | None = None
    added_by: str
    added_at: datetime

    @property
    def label(self) -> str:
        return self.name or self.domain or self.id


@dataclass(frozen=True)
class SweepProgress:
    id: str
    tenants: int
    checked: int
    changed: int
    notified: int
    unknown: int
    started: datetime
    finished: datetime | None
    pending: int = 0  # announcements recorded and not yet accepted by Slack (or dropped)

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def delivered(self) -> bool:
        """Finished, and every announcement it promised is posted (or could not be: a snoozed or broken channel)."""
        return self.done and self.pending <= 0

    def to_json(self) -> dict[str, Any]:
        end = self.finished or datetime.now(UTC)
        return {"tenants": self.tenants, "checked": self.checked, "changed": self.changed,
                "notified": self.notified, "unknown": self.unknown,
                "duration_ms": round((end - self.started).total_seconds() * 1000)}


@dataclass(frozen=True)
class Recorded:
    """A tenant's reading recorded: what changed, and the channels with an announcement that may go out now (its
    sweep is finished, or it belongs to none)."""

    change: Change
    due: tuple[str, ...] = ()
    who: Revocations | None = None  # the directory audit behind a drift, as announced


class DriftStore:
    def __init__(self, state: State) -> None:
        self.state = state
        self.outbox = Outbox(state.prefix)
        self._done = state.client.register_script(DONE_SCRIPT)
        self._renew = state.client.register_script(RENEW_SCRIPT)
        self._release = state.client.register_script(RELEASE_SCRIPT)

    def key(self, *parts: str) -> str:
        return self.state.key(*parts)

    # --- watching -----------------------------------------------------------------------------------

    async def watch(self, tenant: WatchedTenant, channel: str) -> bool:
        """Subscribe `channel`; False when it already watched the tenant."""
        async with self.state.guard("record the watch") as redis, redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.key("watch", "tenants"), tenant.id, tenant.model_dump_json())
            pipe.sadd(self.key("watch", "tenant", tenant.id), channel)
            pipe.sadd(self.key("watch", "channel", channel), tenant.id)
            pipe.hdel(self.key("watch", "broken"), f"{channel} {tenant.id}")
            pipe.incr(self.key("fleet", "generation"))
            results = await pipe.execute()
        return bool(results[1])

    async def watch_many(self, rows: list[tuple[WatchedTenant, str]]) -> int:
        """Subscribe many (tenant, channel) pairs in one transaction; how many were new."""
        if not rows:
            return 0
        async with self.state.guard("record the watches") as redis, redis.pipeline(transaction=True) as pipe:
            for tenant, channel in rows:
                pipe.hsetnx(self.key("watch", "tenants"), tenant.id, tenant.model_dump_json())
                pipe.sadd(self.key("watch", "tenant", tenant.id), channel)
                pipe.sadd(self.key("watch", "channel", channel), tenant.id)
            pipe.incr(self.key("fleet", "generation"))
            results = await pipe.execute()
        return sum(1 for index in range(1, len(results) - 1, 3) if results[index])

    async def unwatch(self, tenant: str, channel: str | None) -> int:
        """Unsubscribe one channel (or every channel); how many subscriptions ended. A tenant no channel watches
        any more is forgotten, with its snapshot."""
        async with self.state.guard("record the unwatch") as redis:
            channels = [channel] if channel else [_text(c) for c in
                                                  await redis.smembers(self.key("watch", "tenant", tenant))]
            async with redis.pipeline(transaction=True) as pipe:
                for each in channels:
                    pipe.srem(self.key("watch", "tenant", tenant), each)
                    pipe.srem(self.key("watch", "channel", each), tenant)
                    pipe.hdel(self.key("watch", "broken"), f"{each} {tenant}")
                removed = await pipe.execute()
            ended = sum(1 for index in range(0, len(removed), 3) if removed[index])
            if not await redis.scard(self.key("watch", "tenant", tenant)):
                await redis.hdel(self.key("watch", "tenants"), tenant)
                await redis.delete(self.key("snap", tenant))
            await redis.incr(self.key("fleet", "generation"))
        return ended

    async def settle(self, watched: str, tenant: TenantInfo) -> None:
        """Record what a check learnt of a watched tenant: its name and domain and, for one imported by domain,
        its GUID. Subscriptions and the snapshot then live under the GUID, the id every report and change carries,
        so a tenant imported as `contoso.com` and watched by GUID is one tenant, notified once."""
        if not is_guid(tenant.id):
            return  # Microsoft did not say which tenant it is (unknown domain, sign-in failed)
        tenants_key = self.key("watch", "tenants")
        old_channels, new_channels = self.key("watch", "tenant", watched), self.key("watch", "tenant", tenant.id)
        old_snap, new_snap = self.key("snap", watched), self.key("snap", tenant.id)

        async def body(pipe: Pipeline) -> None:
            raw = await pipe.hget(tenants_key, watched)
            if raw is None:
                return  # unwatched meanwhile
            entry = WatchedTenant.model_validate_json(raw)
            if watched != tenant.id:
                existing = await pipe.hget(tenants_key, tenant.id)
                if existing is not None:
                    entry = WatchedTenant.model_validate_json(existing)  # watched by GUID as well: keep that one
            settled = entry.model_copy(update={"id": tenant.id, "name": tenant.name or entry.name,
                                               "domain": tenant.domain or entry.domain})
            if watched == tenant.id and settled == entry:
                return
            channels = [_text(c) for c in await pipe.smembers(old_channels)] if watched != tenant.id else []
            broken = (await pipe.hmget(self.key("watch", "broken"), [f"{c} {watched}" for c in channels])
                      if channels else [])
            snapshot = await pipe.get(old_snap) if watched != tenant.id else None
            keep_snapshot = snapshot is not None and not await pipe.exists(new_snap)
            pipe.multi()
            pipe.hset(tenants_key, tenant.id, settled.model_dump_json())
            pipe.incr(self.key("fleet", "generation"))
            if watched == tenant.id:
                await pipe.execute()
                return
            pipe.hdel(tenants_key, watched)
            for channel, reason in zip(channels, broken, strict=True):
                pipe.sadd(new_channels, channel)
                pipe.srem(self.key("watch", "channel", channel), watched)
                pipe.sadd(self.key("watch", "channel", channel), tenant.id)
                if reason is not None:
                    pipe.hdel(self.key("watch", "broken"), f"{channel} {watched}")
                    pipe.hset(self.key("watch", "broken"), f"{channel} {tenant.id}", reason)
            pipe.delete(old_channels, old_snap)
            if snapshot is not None and keep_snapshot:
                pipe.set(new_snap, snapshot)
            await pipe.execute()

        await self.state.atomically("record the tenant's id", [tenants_key, old_channels, old_snap, new_snap], body)

    async def tenants(self, ids: list[str] | None = None) -> list[WatchedTenant]:
        """Every watched tenant, or those of `ids` still watched; by label."""
        async with self.state.guard("read the watched tenants") as redis:
            if ids is None:
                values = list((await redis.hgetall(self.key("watch", "tenants"))).values())
            else:
                values = [v for v in await redis.hmget(self.key("watch", "tenants"), ids) if v] if ids else []
        return sorted((WatchedTenant.model_validate_json(value) for value in values), key=lambda t: t.label)

    async def find(self, tenant: str) -> list[WatchedTenant]:
        """The watched tenants a user means by `tenant` (a GUID or domain, as parsed): by id, or by domain."""
        return [t for t in await self.tenants() if tenant in (t.id, (t.domain or "").lower())]

    async def tenant_ids(self) -> list[str]:
        async with self.state.guard("read the watched tenants") as redis:
            return sorted(_text(key) for key in await redis.hkeys(self.key("watch", "tenants")))

    async def channels_of(self, tenant: str) -> list[str]:
        async with self.state.guard("read the subscriptions") as redis:
            return sorted(_text(c) for c in await redis.smembers(self.key("watch", "tenant", tenant)))

    async def tenants_of(self, channel: str) -> list[str]:
        async with self.state.guard("read the subscriptions") as redis:
            return sorted(_text(t) for t in await redis.smembers(self.key("watch", "channel", channel)))

    async def all_channels(self) -> list[str]:
        """Every channel watching any tenant (one pipelined read, not a round trip per tenant)."""
        tenants = await self.tenant_ids()
        async with self.state.guard("read the subscriptions") as redis, redis.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                pipe.smembers(self.key("watch", "tenant", tenant))
            members = await pipe.execute() if tenants else []
        return sorted({_text(channel) for each in members for channel in each})

    async def mark_broken(self, channel: str, tenant: str, reason: str) -> None:
        async with self.state.guard("record the broken subscription") as redis:
            await redis.hset(self.key("watch", "broken"), f"{channel} {tenant}", reason)

    async def broken(self) -> dict[tuple[str, str], str]:
        async with self.state.guard("read the subscriptions") as redis:
            raw = await redis.hgetall(self.key("watch", "broken"))
        pairs = {}
        for key, value in raw.items():
            channel, _, tenant = _text(key).partition(" ")
            pairs[(channel, tenant)] = _text(value)
        return pairs

    async def broken_of(self, channel: str, tenants: list[str]) -> dict[str, str]:
        """Why posting to `channel` broke, by tenant (a "*" entry breaks every tenant of the channel)."""
        if not tenants:
            return {}
        async with self.state.guard("read the subscriptions") as redis:
            raw = await redis.hmget(self.key("watch", "broken"), [f"{channel} {t}" for t in [*tenants, "*"]])
        every = raw[-1]
        reasons = {tenant: reason or every for tenant, reason in zip(tenants, raw[:-1], strict=True)}
        return {tenant: _text(reason) for tenant, reason in reasons.items() if reason is not None}

    # --- the fleet summary ------------------------------------------------------------------------------

    async def fleet_batches(self, batch: int = FLEET_BATCH) -> AsyncIterator[list[tuple[bytes, bytes | None]]]:
        """Every watched tenant with its packed snapshot (None before its first read), `batch` at a time: one
        round trip per batch, never the whole fleet's snapshots in memory."""
        ids = await self.tenant_ids()
        for start in range(0, len(ids), batch):
            chunk = ids[start:start + batch]
            async with self.state.guard("read the watched tenants") as redis, \
                    redis.pipeline(transaction=False) as pipe:
                pipe.hmget(self.key("watch", "tenants"), chunk)
                pipe.mget([self.key("snap", tenant) for tenant in chunk])
                tenants, snapshots = await pipe.execute()
            yield [(tenant, snapshot) for tenant, snapshot in zip(tenants, snapshots, strict=True) if tenant]

    async def listing_batches(self, batch: int = FLEET_BATCH
                              ) -> AsyncIterator[list[tuple[bytes, bytes | None, list[str]]]]:
        """Every watched tenant with its packed snapshot and its channels, `batch` at a time (one round trip each)."""
        ids = await self.tenant_ids()
        for start in range(0, len(ids), batch):
            chunk = ids[start:start + batch]
            async with self.state.guard("read the watched tenants") as redis, \
                    redis.pipeline(transaction=False) as pipe:
                pipe.hmget(self.key("watch", "tenants"), chunk)
                pipe.mget([self.key("snap", tenant) for tenant in chunk])
                channel_sets = [self.key("watch", "tenant", tenant) for tenant in chunk]
                pipe.eval(_JOINED_MEMBERS, len(channel_sets), *channel_sets)
                tenants, snapshots, channels = await pipe.execute()
            yield [(tenant, snapshot, sorted(_text(members).split()))
                   for tenant, snapshot, members in zip(tenants, snapshots, channels, strict=True) if tenant]

    async def fleet_summary(self) -> tuple[bytes | None, int]:
        """The stored summary and the fleet's current generation, in one round trip."""
        async with self.state.guard("read the fleet summary") as redis:
            summary, generation = await redis.mget([self.key("fleet", "summary"), self.key("fleet", "generation")])
        return cast(bytes | None, summary), int(generation or 0)

    async def fleet_generation(self) -> int:
        async with self.state.guard("read the fleet summary") as redis:
            return int(await redis.get(self.key("fleet", "generation")) or 0)

    async def save_fleet_summary(self, summary: str) -> None:
        async with self.state.guard("record the fleet summary") as redis:
            await redis.set(self.key("fleet", "summary"), summary)

    async def watched_count(self) -> int:
        async with self.state.guard("read the watched tenants") as redis:
            return int(await redis.hlen(self.key("watch", "tenants")))

    # --- snapshots ------------------------------------------------------------------------------------

    async def snapshot(self, tenant: str) -> Snapshot | None:
        async with self.state.guard("read the tenant's snapshot") as redis:
            raw = await redis.get(self.key("snap", tenant))
        return Snapshot.model_validate_json(unpack(raw)) if raw else None

    async def snapshots(self, tenants: list[str]) -> dict[str, Snapshot]:
        if not tenants:
            return {}
        async with self.state.guard("read the snapshots") as redis:
            raws = await redis.mget([self.key("snap", tenant) for tenant in tenants])
        return {tenant: Snapshot.model_validate_json(unpack(raw))
                for tenant, raw in zip(tenants, raws, strict=True) if raw}

    async def update_snapshot(
        self, tenant: str, step: Callable[[Snapshot | None], tuple[Snapshot, Change]], *,
        sweep: str | None = None, who: Revocations | None = None, now: datetime | None = None,
        skip_channel: str | None = None,
    ) -> Recorded | None:
        """Read the snapshot, apply `step`, write the new snapshot and, in the same transaction, an announcement of
        the change (with the directory audit behind it, `who`) for every channel watching the tenant (but
        `skip_channel`, which was answered in place) and, in a sweep, the tenant counted as checked: a job run
        twice announces a change once, and nothing is counted before its announcements are recorded. None when
        this sweep already counted the tenant."""
        key = self.key("snap", tenant)
        channels_key = self.key("watch", "tenant", tenant)
        finished_key = self.key("sweep", sweep, "finished") if sweep is not None else None
        recorded_at = now or datetime.now(UTC)

        async def body(pipe: Pipeline) -> Recorded | None:
            if sweep is not None and await pipe.sismember(self.key("sweep", sweep, "done"), tenant):
                return None  # already counted in this sweep (a job run again after a lost worker)
            raw = await pipe.get(key)
            previous = Snapshot.model_validate_json(unpack(raw)) if raw else None
            snapshot, change = step(previous)
            channels = sorted(_text(c) for c in await pipe.smembers(channels_key)) if change.announce else []
            live_sweep = sweep is not None and bool(await pipe.exists(self.key("sweep", sweep)))
            due = not live_sweep or (finished_key is not None and bool(await pipe.exists(finished_key)))
            entries = []
            for channel in channels:
                if channel == skip_channel:
                    continue
                told = change.for_channel(previous.acknowledged_in(channel) if previous else None)
                if told is not None:
                    entries.append(Pending(id=change_entry_id(change), channel=channel, recorded=recorded_at,
                                           sweep=sweep if live_sweep else None, watched=tenant, change=told,
                                           who=who))
            pipe.multi()
            if snapshot is not previous:
                pipe.set(key, pack(snapshot.model_dump_json()))
                pipe.incr(self.key("fleet", "generation"))
            for entry in entries:
                self.outbox.add(pipe, entry)
            if sweep is not None:  # a sweep that never finishes still leaves nothing behind for long
                pipe.sadd(self.key("sweep", sweep, "done"), tenant)
                pipe.expire(self.key("sweep", sweep, "done"), SWEEP_TTL_SECONDS)
                if live_sweep and change.announce:
                    pipe.hincrby(self.key("sweep", sweep), "changed", 1)
                if live_sweep and change.verdict_after is Verdict.unknown:
                    pipe.hincrby(self.key("sweep", sweep), "unknown", 1)
            await pipe.execute()
            return Recorded(change, tuple(e.channel for e in entries) if due else (), who)

        watched = [key, channels_key] + ([finished_key] if finished_key else [])
        return await self.state.atomically("record the tenant's snapshot", watched, body)

    async def set_snapshot(self, tenant: str, edit: Callable[[Snapshot], Snapshot], what: str) -> Snapshot | None:
        """Change a stored snapshot (acknowledge, snooze) atomically; None when there is none."""
        key = self.key("snap", tenant)

        async def body(pipe: Pipeline) -> Snapshot | None:
            raw = await pipe.get(key)
            if raw is None:
                return None
            snapshot = edit(Snapshot.model_validate_json(unpack(raw)))
            pipe.multi()
            pipe.set(key, pack(snapshot.model_dump_json()))
            await pipe.execute()
            return snapshot

        return await self.state.atomically(what, [key], body)

    # --- sweeps ---------------------------------------------------------------------------------------

    async def start_sweep(self, sweep: str, tenants: int, now: datetime) -> None:
        async with self.state.guard("start the sweep") as redis, redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("sweep", sweep), mapping={"tenants": tenants, "started": now.isoformat(),
                                                          "changed": 0, "unknown": 0, "pending": 0})
            pipe.expire(self.key("sweep", sweep), SWEEP_TTL_SECONDS)
            pipe.set(self.key("sweep", "last"), sweep)
            await pipe.execute()

    async def set_sweep_size(self, sweep: str, tenants: int) -> None:
        async with self.state.guard("start the sweep") as redis:
            await redis.hset(self.key("sweep", sweep), "tenants", tenants)

    async def progress(self, sweep: str) -> SweepProgress | None:
        async with self.state.guard("read the sweep") as redis, redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.key("sweep", sweep))
            pipe.scard(self.key("sweep", sweep, "done"))
            pipe.scard(self.key("sweep", sweep, "notified"))
            raw, checked, notified = await pipe.execute()
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        finished = fields.get("finished")
        return SweepProgress(id=sweep, tenants=int(fields["tenants"]), checked=int(checked),
                             changed=int(fields.get("changed", 0)), notified=int(notified),
                             unknown=int(fields.get("unknown", 0)), pending=int(fields.get("pending", 0)),
                             started=datetime.fromisoformat(fields["started"]),
                             finished=datetime.fromisoformat(finished) if finished else None)

    async def adopt_legacy(self, sweep: str, now: datetime) -> int:
        """Changes the version before the outbox recorded for this sweep (a list announced at its finish, actors
        beside it), turned into pending announcements for the channels watching each tenant now, in one
        transaction that also removes the list: a deploy in the middle of a sweep loses none. How many."""
        changes_key = self.key("sweep", sweep, "changes")

        async def body(pipe: Pipeline) -> int:
            raw = cast(list[bytes], await pipe.lrange(changes_key, 0, -1))
            if not raw:
                return 0
            changes = [Change.model_validate_json(item) for item in raw]
            entries = []
            for change in changes:
                who_raw = await pipe.get(self.key("sweep", sweep, "who", change.tenant))
                who = Revocations.from_json(json.loads(who_raw)) if who_raw else None
                for channel in sorted(_text(c) for c in await pipe.smembers(self.key("watch", "tenant",
                                                                                      change.tenant))):
                    entries.append(Pending(id=change_entry_id(change), channel=channel, recorded=now, sweep=sweep,
                                           watched=change.tenant, change=change, who=who))
            pipe.multi()
            for entry in entries:
                self.outbox.add(pipe, entry)
            pipe.delete(changes_key)
            await pipe.execute()
            return len(changes)

        return await self.state.atomically("take over the sweep's changes", [changes_key], body)

    async def finish(self, sweep: str, now: datetime) -> bool:
        """Mark the sweep finished: its announcements may go out. True the first time (a finish run again, or by a
        second worker, changes nothing and is told so)."""
        async with self.state.guard("finish the sweep") as redis:
            if not await redis.exists(self.key("sweep", sweep)):
                return False
            first = await redis.set(self.key("sweep", sweep, "finished"), now.isoformat(), nx=True,
                                    ex=SWEEP_TTL_SECONDS)
            if first:
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.hsetnx(self.key("sweep", sweep), "finished", now.isoformat())
                    pipe.expire(self.key("sweep", sweep, "done"), SWEEP_TTL_SECONDS)
                    await pipe.execute()
        return bool(first)

    async def last_sweep(self) -> str | None:
        async with self.state.guard("read the sweep") as redis:
            raw = await redis.get(self.key("sweep", "last"))
        return _text(raw) if raw else None

    # --- announcements --------------------------------------------------------------------------------

    async def announce_revision(self, latest: str,
                                message: Callable[[str], Awaitable[tuple[str, list[dict[str, Any]]]]],
                                now: datetime) -> str | None:
        """Record `latest` as announced and, in the same transaction, its announcement (`message(before)`: text
        and blocks) for every watching channel. Returns the revision announced before when this caller recorded
        it; None on the very first start (recorded, nothing to announce) or when another process already had."""
        key = self.key("catalog", "announced")

        async def body(pipe: Pipeline) -> str | None:
            raw = await pipe.get(key)
            before = _text(raw) if raw else None
            if before == latest:
                return None
            entries = []
            if before is not None:
                text, blocks = await message(before)
                entries = [Pending(id=f"revision:{latest}", channel=channel, recorded=now, text=text, blocks=blocks)
                           for channel in await self.all_channels()]
            pipe.multi()
            pipe.set(key, latest)
            if before is not None:  # the sweep the announcement promises, kept until a sweep is queued
                pipe.set(self.key("catalog", "sweep-owed"), latest, ex=_SWEEP_OWED_SECONDS)
            for entry in entries:
                self.outbox.add(pipe, entry)
            await pipe.execute()
            return before

        return await self.state.atomically("record the announcement", [key], body)

    async def sweep_owed(self) -> str | None:
        """The revision whose announcement promised a sweep no worker has queued yet (it died between the two)."""
        async with self.state.guard("read the announcement") as redis:
            raw = await redis.get(self.key("catalog", "sweep-owed"))
        return _text(raw) if raw else None

    async def sweep_queued(self, revision: str) -> None:
        """The sweep owed for `revision` is queued (a newer revision's promise is kept)."""
        async with self.state.guard("record the sweep") as redis:
            await redis.eval(RELEASE_SCRIPT, 1, self.key("catalog", "sweep-owed"), revision)

    # --- the outbox (see bot.drift.outbox) ------------------------------------------------------------

    async def legacy_posted(self, notification: str) -> bool:
        """Whether the version before the outbox claimed this post (it claimed before posting: maybe posted)."""
        async with self.state.guard("read the notification") as redis:
            return bool(await redis.exists(self.key("claim", f"posted:{notification}")))

    async def promise(self, entry: Pending) -> None:
        async with self.state.guard("record the announcement") as redis, redis.pipeline(transaction=True) as pipe:
            self.outbox.add(pipe, entry)
            await pipe.execute()

    async def outbox_channels(self, *, unleased: bool = False) -> list[str]:
        """Channels with announcements waiting (`unleased`: only those no worker is delivering), in one round trip
        for the list and one for the leases."""
        async with self.state.guard("read the announcements") as redis:
            channels = [_text(c) for c in cast(list[bytes], await redis.zrange(self.outbox.channels, 0, -1))]
            if not unleased or not channels:
                return channels
            async with redis.pipeline(transaction=False) as pipe:
                for channel in channels:
                    pipe.exists(self.outbox.lease(channel))
                held = await pipe.execute()
        return [channel for channel, leased in zip(channels, held, strict=True) if not leased]

    async def outbox_backlog(self) -> tuple[int, datetime | None]:
        """How many channels have announcements waiting, and since when the oldest waits."""
        async with self.state.guard("read the announcements") as redis, redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.outbox.channels)
            pipe.zrange(self.outbox.channels, 0, 0, withscores=True)
            count, oldest = await pipe.execute()
        since = datetime.fromtimestamp(float(oldest[0][1]), UTC) if oldest else None
        return int(count), since

    async def deliverable(self, channel: str, now: datetime) -> tuple[list[Pending], list[Pending]]:
        """The channel's announcements that may go out now (those of a finished sweep, or of none), oldest first,
        and those to drop instead: a week old, or of a tenant the channel no longer watches or has snoozed."""
        async with self.state.guard("read the announcements") as redis:
            raw = await redis.hgetall(self.outbox.hash(channel))
            if not raw:  # delivered, or expired unsent: the channel leaves the list (atomically: none was added)
                await self._done(keys=self._done_keys(channel), args=[channel, self.state.prefix, "0"], client=redis)
                return [], []
            entries = sorted((Pending.from_json(channel, value) for value in raw.values()),
                             key=lambda e: (e.recorded, e.id))
            sweeps = sorted({e.sweep for e in entries if e.sweep})
            tenants = sorted({t for e in entries for t in (e.tenant, e.watched) if t})
            async with redis.pipeline(transaction=False) as pipe:
                for sweep in sweeps:
                    pipe.exists(self.key("sweep", sweep, "finished"))
                    pipe.exists(self.key("sweep", sweep))
                for tenant in tenants:
                    pipe.sismember(self.key("watch", "channel", channel), tenant)
                    pipe.exists(self.outbox.snooze(channel, tenant))
                answers = await pipe.execute() if sweeps or tenants else []
        finished = {s for i, s in enumerate(sweeps) if answers[2 * i] or not answers[2 * i + 1]}  # or expired
        flags = answers[2 * len(sweeps):]
        watched = {t for i, t in enumerate(tenants) if flags[2 * i]}
        snoozed = {t for i, t in enumerate(tenants) if flags[2 * i + 1]}
        due, dropped = [], []
        for entry in entries:
            ids = {entry.tenant, entry.watched}
            unwanted = entry.change is not None and (not ids & watched or bool(ids & snoozed))
            if unwanted or now - entry.recorded > MAX_AGE:
                dropped.append(entry)
            elif entry.sweep is None or entry.sweep in finished or now - entry.recorded > UNFINISHED_SWEEP:
                due.append(entry)
        return due, dropped

    async def done(self, channel: str, entries: list[Pending], *, delivered: bool) -> None:
        """Remove entries Slack accepted (`delivered`: their tenants count as notified, a broken mark on the
        channel is cleared) or that are dropped, in one atomic step."""
        if not entries:
            return
        args: list[str] = [channel, self.state.prefix, "1" if delivered else "0"]
        for entry in entries:
            args += [entry.id, entry.sweep or "", entry.tenant or ""]
            if delivered and entry.watched and entry.watched != entry.tenant:
                args += ["", "", entry.watched]  # a domain watch's broken mark
        async with self.state.guard("record the delivery"):
            await self._done(keys=self._done_keys(channel), args=args)

    def _done_keys(self, channel: str) -> list[str]:
        return [self.outbox.hash(channel), self.outbox.channels, self.key("watch", "broken")]

    async def lease(self, channel: str, seconds: float) -> str | None:
        """The right to deliver `channel` for `seconds`: a token, or None while another worker holds it."""
        token = new_token()
        async with self.state.guard("take the channel's delivery") as redis:
            taken = await redis.set(self.outbox.lease(channel), token, nx=True, px=max(1, int(seconds * 1000)))
        return token if taken else None

    async def renew_lease(self, channel: str, token: str, seconds: float) -> bool:
        async with self.state.guard("keep the channel's delivery") as redis:
            return bool(await self._renew(keys=[self.outbox.lease(channel)],
                                          args=[token, max(1, int(seconds * 1000))], client=redis))

    async def release_lease(self, channel: str, token: str) -> None:
        async with self.state.guard("let go of the channel's delivery") as redis:
            await self._release(keys=[self.outbox.lease(channel)], args=[token], client=redis)

    async def snooze(self, channel: str, tenant: str, until: datetime, now: datetime) -> None:
        async with self.state.guard("record the snooze") as redis:
            await redis.set(self.outbox.snooze(channel, tenant), until.isoformat(),
                            ex=max(1, int((until - now).total_seconds())))

    async def snoozed_of(self, channel: str, tenants: list[str]) -> dict[str, datetime]:
        if not tenants:
            return {}
        async with self.state.guard("read the snoozes") as redis:
            raw = await redis.mget([self.outbox.snooze(channel, t) for t in tenants])
        return {t: datetime.fromisoformat(_text(v)) for t, v in zip(tenants, raw, strict=True) if v}

    async def claim(self, name: str, ttl: int) -> bool:
        """A one-time claim (a sweep being started)."""
        async with self.state.guard("record the notification") as redis:
            return bool(await redis.set(self.key("claim", name), b"1", nx=True, ex=ttl))

    async def release(self, name: str) -> None:
        async with self.state.guard("record the notification") as redis:
            await redis.delete(self.key("claim", name))

