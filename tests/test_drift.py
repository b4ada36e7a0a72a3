"""Drift notifications and fleet sweeps end to end: real SAQ workers on a real Redis, the fake Microsoft answering
the checks (and the directory audit), the fake Slack receiving what the channels would see."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from bot.drift.store import WatchedTenant
from bot.drift.sweep import queue_for, start_sweep
from bot.microsoft.http import Priority
from bot.ops_monitor import OpsMonitor
from bot.runtime import Runtime
from bot.settings import Mode, Settings, load_settings
from bot.worker import announce_revision, build_worker
from handlers.blocks.drift import fleet_message, watching_message
from tests.fakes.microsoft import GRAPH_APP_ID, FakeMicrosoft, TenantScenario
from tests.fakes.slack import FakeSlack
from tests.test_readiness_check import complete_scenario
from tests.test_slack_check import microsoft_settings


@pytest.fixture
def settings(microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> Settings:
    return worker_settings(microsoft, fake_slack, redis_url, redis_prefix)


def worker_settings(microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str,
                    **overrides: Any) -> Settings:
    values = microsoft_settings(microsoft) | {
        "slack_bot_token": fake_slack.bot_token, "slack_api_url": fake_slack.api_url, "redis_url": redis_url,
        "redis_prefix": redis_prefix, "itdr_sweep_spread_seconds": 0, "itdr_http_timeout_seconds": 5,
        "itdr_check_deadline_seconds": 10,
    } | overrides
    return load_settings(Mode.WORKER, _env_file=None, **values)


class Fleet:
    """A running worker and what a test needs around it."""

    def __init__(self, runtime: Runtime, queue: Any, microsoft: FakeMicrosoft, fake: FakeSlack) -> None:
        self.runtime, self.queue, self.microsoft, self.fake = runtime, queue, microsoft, fake

    def tenant(self, version: str = "v6", name: str = "Contoso") -> TenantScenario:
        scenario = complete_scenario(version)
        scenario.display_name = name
        return self.microsoft.add_tenant(scenario)

    async def watch(self, scenario: TenantScenario, channel: str) -> None:
        drift = self.runtime.drift
        report = await drift.check(scenario.tenant_id, priority=Priority.HIGH)
        await drift.watch(scenario.tenant_id, report, channel, "U111", now=datetime.now(UTC))

    async def sweep(self, *, within: float = 60) -> dict[str, Any]:
        """Run a sweep to its end and let its posts go out; `itdr sweep --wait --json` prints the same."""
        store = self.runtime.drift.store
        sweep = await start_sweep(self.queue, store, self.runtime.settings, now=datetime.now(UTC))
        deadline = asyncio.get_running_loop().time() + within
        while True:
            progress = await store.progress(sweep)
            if progress is not None and progress.delivered:
                break
            assert asyncio.get_running_loop().time() < deadline, f"sweep not done: {progress}"
            await asyncio.sleep(0.1)
        await self.settled()
        return progress.to_json()

    async def settled(self, within: float = 30) -> None:
        """No job queued or running (posts paced a second apart included)."""
        deadline = asyncio.get_running_loop().time() + within
        while await self.queue.count("queued") or await self.queue.count("active"):
            assert asyncio.get_running_loop().time() < deadline, "jobs still running"
            await asyncio.sleep(0.1)

    def posts(self, channel: str) -> list[dict[str, Any]]:
        return [c.args for c in self.fake.calls_to("chat.postMessage") if c.args.get("channel") == channel and c.ok]


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, microsoft: FakeMicrosoft, fake: FakeSlack) -> AsyncIterator[Fleet]:
    async with Runtime.open(settings, Mode.WORKER) as runtime:
        queue = queue_for(runtime.redis, settings)
        worker = build_worker(runtime, queue, grace_seconds=0)
        task = asyncio.create_task(worker.start())
        try:
            # A test starts by its startup (a revision announced, a promised sweep queued): never before it ran.
            await asyncio.wait_for(worker.started.wait(), 30)
            yield Fleet(runtime, queue, microsoft, fake)
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 20)


@pytest.fixture
async def fleet(settings: Settings, microsoft: FakeMicrosoft, fake_slack: FakeSlack) -> AsyncIterator[Fleet]:
    async with running_worker(settings, microsoft, fake_slack) as running:
        yield running


def text_of(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks"), ensure_ascii=False) + message.get("text", "")


async def test_a_baseline_then_silence_however_many_sweeps(fleet: Fleet) -> None:
    tenants = [fleet.tenant(name=f"Tenant {n}") for n in range(3)]
    for scenario in tenants:
        await fleet.watch(scenario, "C0QUIET")
    for _ in range(3):
        result = await fleet.sweep()
        assert result["tenants"] == 3 and result["checked"] == 3
        assert result["changed"] == result["notified"] == result["unknown"] == 0
        assert set(result) == {"tenants", "checked", "changed", "notified", "unknown", "duration_ms"}
    assert fleet.posts("C0QUIET") == []


async def test_a_revoked_permission_is_one_message_naming_it_and_who(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Fabrikam")
    await fleet.watch(scenario, "C0DRIFT")
    scenario.revoke(GRAPH_APP_ID, "AuditLog.Read.All", by="mallory@fabrikam.onmicrosoft.com")
    result = await fleet.sweep()
    assert result["changed"] == 1 and result["notified"] == 1
    (message,) = fleet.posts("C0DRIFT")
    text = text_of(message)
    assert message["text"].startswith("Drift: Fabrikam")
    assert "AuditLog.Read.All" in text and "pass → *fail*" in text
    assert "Log and event ingest" in text  # what stops working
    assert "Remove app role assignment from service principal" in text
    assert "mallory@fabrikam.onmicrosoft.com" in text
    assert "Ready" in text and "Blocked" in text  # the verdict before → after
    assert "last good" in text
    for label in ("Re-check", "Start consent", "Acknowledge", "Snooze 24 h"):
        assert label in text
    # Nothing new: nothing said.
    await fleet.sweep()
    assert len(fleet.posts("C0DRIFT")) == 1

    scenario.grant_all(GRAPH_APP_ID, "AuditLog.Read.All")  # an admin puts it back
    result = await fleet.sweep()
    assert result["changed"] == 1
    recovered = fleet.posts("C0DRIFT")[-1]
    assert recovered["text"].startswith("Recovered: Fabrikam") and "AuditLog.Read.All" in text_of(recovered)


async def test_a_tenant_imported_by_domain_is_notified_and_is_one_tenant_with_its_guid(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Fabrikam")
    store = fleet.runtime.drift.store
    now = datetime.now(UTC)
    imported = WatchedTenant(id=scenario.domains[0], domain=scenario.domains[0], added_by="itdr import", added_at=now)
    await store.watch_many([(imported, "C0IMPORT")])  # what `itdr tenants import` stores: the domain as given
    await fleet.watch(scenario, "C0BYGUID")  # the same tenant, watched by GUID from another channel
    result = await fleet.sweep()
    assert result["tenants"] == 2 and result["changed"] == 0
    (watched,) = await store.tenants()
    assert (watched.id, watched.name) == (scenario.tenant_id, "Fabrikam")
    assert await store.channels_of(scenario.tenant_id) == ["C0BYGUID", "C0IMPORT"]
    assert await store.tenants_of("C0IMPORT") == [scenario.tenant_id]

    scenario.revoke(GRAPH_APP_ID, "AuditLog.Read.All")
    result = await fleet.sweep()
    assert result == result | {"tenants": 1, "changed": 1, "notified": 1}
    for channel in ("C0IMPORT", "C0BYGUID"):
        (message,) = fleet.posts(channel)
        assert message["text"].startswith("Drift: Fabrikam")


async def test_the_actor_is_named_though_the_audit_answers_after_the_other_tenants_finished(fleet: Fleet) -> None:
    """Issue 17: the sweep's last tenant must not start the announcement while a drifted tenant's directory audit
    is still being read; the message names the actor every time, for a tenant watched by domain too."""
    quiet = [fleet.tenant(name=f"Quiet {n}") for n in range(4)]
    for scenario in quiet:
        await fleet.watch(scenario, "C0SLOWAUDIT")
    drifted = fleet.tenant(name="Slowaudit")
    store = fleet.runtime.drift.store
    imported = WatchedTenant(id=drifted.domains[0], domain=drifted.domains[0], added_by="itdr import",
                             added_at=datetime.now(UTC))
    await store.watch_many([(imported, "C0SLOWAUDIT")])
    await fleet.sweep()  # the baseline files the domain under its GUID
    drifted.revoke(GRAPH_APP_ID, "AuditLog.Read.All", by="mallory@slowaudit.onmicrosoft.com")
    fleet.microsoft.audit_delay = 2.0
    try:
        result = await fleet.sweep()
    finally:
        fleet.microsoft.audit_delay = 0.0
    assert result["changed"] == 1 and result["notified"] == 1
    (message,) = fleet.posts("C0SLOWAUDIT")
    assert message["text"].startswith("Drift: Slowaudit")
    assert "mallory@slowaudit.onmicrosoft.com" in text_of(message)


async def test_when_the_audit_cannot_be_read_it_says_so_and_still_notifies(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Northwind")
    await fleet.watch(scenario, "C0NOAUDIT")
    scenario.revoke(GRAPH_APP_ID, "AuditLog.Read.All")
    scenario.audit_forbidden = True
    await fleet.sweep()
    (message,) = fleet.posts("C0NOAUDIT")
    assert "The directory audit could not be read" in text_of(message)
    assert "no AuditLog.Read.All" in text_of(message)


async def test_unknown_is_announced_only_when_it_lasts_two_sweeps(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Flaky")
    await fleet.watch(scenario, "C0FLAKY")
    # A 500 is not retried and says nothing about when to come back: the check is simply unknown.
    outage = fleet.microsoft.fail(r"\$batch", 500, service="graph")
    try:
        result = await fleet.sweep()
        assert result["unknown"] == 1 and fleet.posts("C0FLAKY") == []
    finally:
        fleet.microsoft.faults.remove(outage)
    await fleet.sweep()  # readable again: the streak ends, nothing to say
    assert fleet.posts("C0FLAKY") == []
    outage = fleet.microsoft.fail(r"\$batch", 500, service="graph")
    try:
        await fleet.sweep()
        assert fleet.posts("C0FLAKY") == []
        await fleet.sweep()
        (message,) = fleet.posts("C0FLAKY")
        assert "Could not check Flaky twice in a row" in message["text"] or "twice in a row" in text_of(message)
        await fleet.sweep()
        assert len(fleet.posts("C0FLAKY")) == 1, "announced once, not every sweep"
    finally:
        fleet.microsoft.faults.remove(outage)


async def test_many_changed_tenants_make_one_digest_per_channel(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix, itdr_digest_threshold=2)
    async with running_worker(settings, microsoft, fake_slack) as fleet:
        tenants = [fleet.tenant(name=f"Digest {n}") for n in range(3)]
        await fleet.watch(tenants[0], "C0EACH")
        for scenario in tenants:
            await fleet.watch(scenario, "C0DIGEST")
            scenario.revoke(GRAPH_APP_ID, "Domain.Read.All")
        result = await fleet.sweep()
        assert result["changed"] == 3 and result["notified"] == 3
        (digest,) = fleet.posts("C0DIGEST")
        assert digest["text"].startswith("Drift in 3 tenants")
        assert "Lost* `Domain.Read.All` in 3: Digest 0, Digest 1, Digest 2" in text_of(digest)
        (single,) = fleet.posts("C0EACH")  # one change in that channel: its own message
        assert single["text"].startswith("Drift: Digest 0")


async def test_a_revision_is_announced_once_across_workers_and_restarts(
    settings: Settings, microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    async with running_worker(settings, microsoft, fake_slack) as fleet:  # the very first start: records, no post
        scenario = fleet.tenant(version="v5", name="Behind")
        await fleet.watch(scenario, "C0REV")
        await fleet.settled()
    assert fleet.posts("C0REV") == []
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(f"{redis_prefix}catalog:announced", "v5")  # as if v6 had just been published
    finally:
        await client.aclose()
    async with running_worker(settings, microsoft, fake_slack) as first, \
            running_worker(settings, microsoft, fake_slack) as second:
        await first.settled()
        await second.settled()
    posts = fleet.posts("C0REV")
    (announcement,) = [p for p in posts if "new revision" in text_of(p).lower()]
    assert "v6" in announcement["text"] and "1 of 1 watched tenant lacks" in announcement["text"]
    async with running_worker(settings, microsoft, fake_slack) as again:
        await again.settled()
    assert len([p for p in fleet.posts("C0REV") if "new revision" in text_of(p).lower()]) == 1


async def test_the_sweep_a_revision_promised_is_made_by_the_next_worker_if_its_announcer_died(
    settings: Settings, microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    async with running_worker(settings, microsoft, fake_slack) as fleet:
        scenario = fleet.tenant(version="v5", name="Promised")
        await fleet.watch(scenario, "C0PROMISE")
        await fleet.settled()
        drift = fleet.runtime.drift
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.set(f"{redis_prefix}catalog:announced", "v5")
        finally:
            await client.aclose()

        async def message(before: str) -> tuple[str, list[dict[str, Any]]]:
            return f"New revision after {before}", []

        # A worker records v6's announcement, then dies before it queues the sweep that announcement promises.
        assert await drift.announce_revision("v6", message, datetime.now(UTC)) == "v5"
        assert await drift.store.sweep_owed() == "v6"
        before = await drift.store.last_sweep()
    async with running_worker(settings, microsoft, fake_slack) as next_worker:
        store = next_worker.runtime.drift.store
        deadline = asyncio.get_running_loop().time() + 30
        while (swept := await store.last_sweep()) == before or await store.sweep_owed() is not None:
            assert asyncio.get_running_loop().time() < deadline, "the promised sweep was never made"
            await asyncio.sleep(0.1)
        assert swept is not None
        # Another worker starting (its startup runs the same step): nothing is owed any more.
        assert await announce_revision(next_worker.runtime, next_worker.queue) is False
        assert await store.last_sweep() == swept, "and only once"


async def test_a_role_about_to_end_is_said_once_before_it_is_lost(fleet: Fleet) -> None:
    from datetime import timedelta

    scenario = fleet.tenant(name="Timebound")
    security_admin = "194ae4cb-b126-40b2-bd5b-6091b380977d"
    scenario.time_bound(security_admin, datetime.now(UTC) + timedelta(days=40))
    await fleet.watch(scenario, "C0ENDS")
    await fleet.sweep()
    assert fleet.posts("C0ENDS") == [], "40 days away: nothing to say yet"
    end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=6)
    scenario.role_ends[security_admin] = end  # shortened by an administrator
    result = await fleet.sweep()
    assert result["changed"] == 1 and result["notified"] == 1
    (message,) = fleet.posts("C0ENDS")
    text = text_of(message)
    assert message["text"].startswith("Roles ending: Timebound") and "Security Administrator" in message["text"]
    assert "*Ending (1):*" in text and "`Security Administrator` until" in text and "then stops:" in text
    assert f"/itdr fix {scenario.tenant_id}" in text
    await fleet.sweep()
    assert len(fleet.posts("C0ENDS")) == 1, "said once"
    (watching,), _ = await fleet.runtime.drift.watching("C0ENDS")
    assert ":hourglass_flowing_sand: a role ends" in text_of(
        watching_message("C0ENDS", [watching], datetime.now(UTC)).to_response())
    summary = await fleet.runtime.drift.fleet_summary(datetime.now(UTC))  # computed and stored (a small fleet)
    await OpsMonitor(fleet.runtime).update_gauges()  # what /metrics says (a worker sets it every pass)
    assert REGISTRY.get_sample_value("itdr_tenants_roles_ending") == 1
    assert summary.ending.first == ("Timebound",) and summary.to_json()["roles_ending"] == ["Timebound"]
    assert "*Roles ending within two weeks (1):* Timebound" in text_of(fleet_message(summary).to_response())
    scenario.role_ends[security_admin] = datetime.now(UTC) - timedelta(seconds=1)  # the assignment ended
    await fleet.sweep()
    lost = fleet.posts("C0ENDS")[-1]
    assert lost["text"].startswith("Drift: Timebound") and "Security Administrator" in text_of(lost)


async def test_slack_429_during_a_burst_is_honoured_and_nothing_is_lost(fleet: Fleet) -> None:
    tenants = [fleet.tenant(name=f"Burst {n}") for n in range(3)]
    for scenario in tenants:
        await fleet.watch(scenario, "C0BURST")
        scenario.revoke(GRAPH_APP_ID, "User.Read.All")
    fleet.fake.rate_limit("chat.postMessage", retry_after=1, times=4)
    await fleet.sweep()
    posted = fleet.posts("C0BURST")
    assert sorted(p["text"].split(".")[0] for p in posted) == [f"Drift: Burst {n}" for n in range(3)]
    times = [c.at for c in fleet.fake.calls_to("chat.postMessage") if c.ok and c.args.get("channel") == "C0BURST"]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times)), "one message a second per channel"


async def test_a_channel_the_bot_left_marks_the_subscription_broken(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Orphan")
    await fleet.watch(scenario, "C0GONE")
    scenario.revoke(GRAPH_APP_ID, "User.Read.All")
    fleet.fake.fail("chat.postMessage", error="channel_not_found", times=1)
    await fleet.sweep()  # the sweep finishes all the same
    broken = await fleet.runtime.drift.store.broken()
    assert "channel_not_found" in broken[("C0GONE", scenario.tenant_id)]


async def test_throttled_tenants_are_rescheduled_then_counted_unknown(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Throttled")
    await fleet.watch(scenario, "C0SLOW")
    fault = fleet.microsoft.throttle(r"\$batch", retry_after=1, times=None)  # beyond every retry, every time
    try:
        result = await fleet.sweep(within=90)
    finally:
        fleet.microsoft.faults.remove(fault)
    assert result["unknown"] == 1 and result["checked"] == 1
    batches = fleet.microsoft.recorded("graph", path=r"\$batch")
    assert len(batches) >= 4 * 4, "rescheduled three times after the first try, each with its retries"


async def test_a_job_a_worker_has_just_taken_is_not_swept_as_lost(redis_url: str, redis_prefix: str) -> None:
    """Between BLMOVE and marking the job active, a busy worker's job is in the active list with status `queued`:
    SAQ's sweep would abort and retry it while it runs. Only one still there at the next sweep is lost."""
    from saq.job import Status

    from bot.store import RedisConnections

    redis = RedisConnections(redis_url, redis_prefix)
    queue = queue_for(redis, load_settings(_env_file=None, redis_url=redis_url, redis_prefix=redis_prefix))
    client = redis.queue_client()
    try:
        taken = await queue.enqueue("check_tenant", key="check:taken", tenant="taken", retries=3)
        running = await queue.enqueue("check_tenant", key="check:running", tenant="running", retries=3, timeout=60)
        assert taken is not None and running is not None
        for _ in range(2):  # what a worker's dequeue does first: both move to the active list, still `queued`
            await client.lmove(queue.namespace("queued"), queue.namespace("active"), "LEFT", "RIGHT")
        running.started = int(time.time() * 1000)
        await running.update(status=Status.ACTIVE)  # the worker got as far as marking this one active

        assert await queue.sweep(lock=1) == []  # just taken: left alone, however it looks
        await asyncio.sleep(1.1)  # the sweep lock lapses: the next sweep
        assert await queue.sweep(lock=1) == [taken.id]  # still not marked active: lost, and retried
        refreshed = await queue.job("check:taken")
        assert refreshed is not None and refreshed.status is Status.QUEUED
        assert await client.lrange(queue.namespace("active"), 0, -1) == [running.id.encode()]
    finally:
        await redis.aclose()
