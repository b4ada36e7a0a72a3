"""Drift announcements are never lost and never doubled (the outbox): a worker killed while announcing, a finish
with thousands of changes behind a slow Redis, a post cancelled mid-flight, a change recorded after its sweep
finished. And what a channel expects: per-channel snooze, a Re-check telling the other channels, a broken
subscription mended by the next post that gets through, drift read though half the tenant could not be."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bot.drift.service import DriftService
from bot.drift.store import DriftStore, WatchedTenant
from bot.drift.sweep import JobName, finish_now, queue_for, start_sweep
from bot.microsoft.http import Priority
from bot.readiness.model import CheckGroup, CheckItem, CheckStatus, Report, TenantInfo, Verdict
from bot.readiness.service import ReadinessService
from bot.store import RedisConnections
from catalog import load_catalog
from tests.fakes.microsoft import GRAPH_APP_ID, FakeMicrosoft
from tests.fakes.slack import FakeSlack
from tests.test_drift import Fleet, running_worker, text_of, worker_settings
from tests.test_drift_workers import worker_env
from tests.test_readiness_check import complete_scenario

catalog = load_catalog()
FAST = {"itdr_delivery_lease_seconds": 2, "itdr_delivery_check_seconds": 1}


@pytest.fixture
async def fleet(microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
                ) -> AsyncIterator[Fleet]:
    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix, **FAST)
    async with running_worker(settings, microsoft, fake_slack) as running:
        yield running


def posted(fake: FakeSlack, channel: str) -> list[str]:
    return [c.args["text"] for c in fake.calls_to("chat.postMessage") if c.ok and c.args.get("channel") == channel]


async def until(condition: Callable[[], object], *, within: float, what: str) -> None:
    """Wait for `condition()` (a value or an awaitable) to hold."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


# ----------------
#  1. never lost, never doubled
# ----------------


async def test_a_worker_killed_while_announcing_leaves_nothing_unsaid_and_nothing_said_twice(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix, itdr_digest_threshold=10, **FAST)
    redis = RedisConnections(redis_url, redis_prefix)
    readiness = ReadinessService(settings, catalog)
    drift = DriftService(catalog, DriftStore(redis.state), readiness)
    scenarios = []
    for n in range(4):
        scenario = complete_scenario()
        scenario.display_name = f"Killed {n}"
        microsoft.add_tenant(scenario)
        report = await drift.check(scenario.tenant_id, priority=Priority.HIGH)
        await drift.watch(scenario.tenant_id, report, "C0KILL", "U111", now=datetime.now(UTC))
        scenario.revoke(GRAPH_APP_ID, "Domain.Read.All")
        scenarios.append(scenario)
    env = worker_env(settings, microsoft) | {"ITDR_DELIVERY_LEASE_SECONDS": "2", "ITDR_DELIVERY_CHECK_SECONDS": "1",
                                              "ITDR_DIGEST_THRESHOLD": "10"}
    log = (tmp_path / "worker.log").open("w")
    worker = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot.cli", "worker", cwd=tmp_path, env=env,
                                                  stdout=log, stderr=log)
    try:
        await asyncio.sleep(2)
        await start_sweep(queue_for(redis, settings), drift.store, settings, now=datetime.now(UTC))
        # Four messages a second apart: the kill lands between the second and the third, mid-announcement.
        await fake_slack.wait_for("chat.postMessage", count=2, within=60)
        await asyncio.sleep(0.4)
        worker.send_signal(signal.SIGKILL)
        await asyncio.wait_for(worker.wait(), 10)
        assert len(posted(fake_slack, "C0KILL")) < 4, "killed before it had said everything"
        async with running_worker(settings, microsoft, fake_slack):
            await until(lambda: len(posted(fake_slack, "C0KILL")) >= 4, within=30, what="the rest announced")
            await asyncio.sleep(3)  # a duplicate would arrive now
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        log.close()
        await readiness.aclose()
        await redis.aclose()
    said = Counter(text.split(".")[0] for text in posted(fake_slack, "C0KILL"))
    assert said == Counter({f"Drift: Killed {n}": 1 for n in range(4)}), "each change announced exactly once"


class SlowLink:
    """A TCP proxy in front of Redis adding `delay` seconds each way: a Redis a few milliseconds away, as across
    regions or a busy network, where every round trip a job makes adds up."""

    def __init__(self, upstream: str, delay: float) -> None:
        parts = urlsplit(upstream)
        self.unix = parts.path if parts.scheme == "unix" else None  # the embedded server listens on a socket file
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
        self.database = "/" + query.get("db", "0") if self.unix else (parts.path or "/0")
        self.delay = delay
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self.database}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.unix is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self.unix)
        else:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    await asyncio.sleep(self.delay)
                    sink.write(data)
                    await sink.drain()
            sink.close()

        for task in (asyncio.create_task(pump(reader, up_writer)), asyncio.create_task(pump(up_reader, writer))):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


def handmade(tenant: str, name: str, status: CheckStatus) -> Report:
    item = CheckItem(id="graph.Domain.Read.All", status=status, title="Domain.Read.All", detail="",
                     catalog_name="Domain.Read.All", group=CheckGroup.graph)
    verdict = Verdict.ready if status is CheckStatus.passed else Verdict.blocked
    return Report(tenant=TenantInfo(id=tenant, name=name), catalog_version="v6", satisfied_version=None,
                  verdict=verdict, items=[item], checked_at=datetime.now(UTC).isoformat())


async def test_a_finish_with_thousands_of_changes_behind_a_slow_redis_announces_each_once(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    """3,000 tenants changed in one sweep, a Redis 4 ms away: a finish doing a few round trips per change would
    outlive SAQ's default 10 s job timeout and, retried, find the changes already taken."""
    count = 3000
    redis = RedisConnections(redis_url, redis_prefix)
    drift = DriftService(catalog, DriftStore(redis.state), None)
    now = datetime.now(UTC)
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(count)]
    try:
        await drift.store.watch_many([(WatchedTenant(id=t, name=f"Big {n:04d}", added_by="U1", added_at=now),
                                       "C0BIG") for n, t in enumerate(ids)])
        for n, tenant in enumerate(ids):
            await drift.record(tenant, handmade(tenant, f"Big {n:04d}", CheckStatus.passed),
                               now=now - timedelta(hours=1), sweep=None)
        sweep = "20261205T000000-big"
        await drift.store.start_sweep(sweep, count, now)
        for n, tenant in enumerate(ids):
            await drift.record(tenant, handmade(tenant, f"Big {n:04d}", CheckStatus.failed), now=now, sweep=sweep)
        async with SlowLink(redis_url, delay=0.002) as slow_url:
            settings = worker_settings(microsoft, fake_slack, slow_url, redis_prefix, **FAST)
            async with running_worker(settings, microsoft, fake_slack) as fleet:
                await finish_now(fleet.queue, sweep)
                await until(lambda: posted(fake_slack, "C0BIG"), within=60, what="the digest")
                await asyncio.sleep(3)  # a second digest would arrive now
        progress = await drift.progress(sweep)
    finally:
        await redis.aclose()
    (digest,) = posted(fake_slack, "C0BIG")
    assert digest.startswith(f"Drift in {count:,} tenants".replace(",", ""))
    assert progress is not None and progress.notified == count and progress.pending == 0


async def test_a_post_cancelled_mid_flight_is_posted_once_by_the_next_worker(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix, **FAST)
    async with running_worker(settings, microsoft, fake_slack) as fleet:
        scenario = fleet.tenant(name="Cancelled")
        await fleet.watch(scenario, "C0CANCEL")
        scenario.revoke(GRAPH_APP_ID, "User.Read.All")
        await fleet.settled()
        # Slack asked every worker to hold off the channel (a 429 moments ago): the post waits its turn.
        await fleet.runtime.redis.state.client.set(f"{redis_prefix}pace:C0CANCEL", b"1", px=10000)
        sweep = await start_sweep(fleet.queue, fleet.runtime.drift.store, settings, now=datetime.now(UTC))
        await until(lambda: _deliveries_running(fleet), within=30, what="the delivery waiting for its turn")
        progress = await fleet.runtime.drift.progress(sweep)
        assert progress is not None and progress.done and posted(fake_slack, "C0CANCEL") == []
    # The worker stopped (a deploy): the waiting post was cancelled before it reached Slack.
    assert posted(fake_slack, "C0CANCEL") == []
    async with running_worker(settings, microsoft, fake_slack) as again:
        await until(lambda: posted(fake_slack, "C0CANCEL"), within=30, what="the post made by the next worker")
        await asyncio.sleep(2)
        await again.settled()
    (message,) = posted(fake_slack, "C0CANCEL")
    assert message.startswith("Drift: Cancelled")


async def _deliveries_running(fleet: Fleet) -> bool:
    jobs = await fleet.queue.info(jobs=True)
    return any(job.get("function") == JobName.DELIVER.value and job.get("status") == "active"
               for worker in [jobs] for job in worker.get("jobs", []))


async def test_a_change_recorded_after_its_sweep_finished_is_announced(fleet: Fleet) -> None:
    prompt, late = fleet.tenant(name="Prompt"), fleet.tenant(name="Late")
    await fleet.watch(prompt, "C0LATE")
    await fleet.watch(late, "C0LATE")
    drift, queue = fleet.runtime.drift, fleet.queue
    sweep = "20261205T000000-late"
    await drift.store.start_sweep(sweep, 2, datetime.now(UTC))
    await queue.enqueue(JobName.CHECK.value, key=f"check:{prompt.tenant_id}", tenant=prompt.tenant_id, sweep=sweep,
                        timeout=60, retries=1)
    await until(lambda: _checked(drift, sweep, 1), within=30, what="the prompt tenant counted")
    # The other tenant's check is backlogged (throttled, rescheduled) past the fallback finish, which runs.
    await finish_now(queue, sweep)
    await until(lambda: _sweep_done(drift, sweep), within=30, what="the sweep finished")
    late.revoke(GRAPH_APP_ID, "User.Read.All")
    await queue.enqueue(JobName.CHECK.value, key=f"check:{late.tenant_id}", tenant=late.tenant_id, sweep=sweep,
                        timeout=60, retries=1)
    await until(lambda: posted(fleet.fake, "C0LATE"), within=30, what="the late change announced")
    await fleet.settled()
    (message,) = posted(fleet.fake, "C0LATE")
    assert message.startswith("Drift: Late") and "User.Read.All" in message


async def _checked(drift: DriftService, sweep: str, count: int) -> bool:
    progress = await drift.progress(sweep)
    return progress is not None and progress.checked >= count


async def _sweep_done(drift: DriftService, sweep: str) -> bool:
    progress = await drift.progress(sweep)
    return progress is not None and progress.delivered


# ----------------
#  2. what an engineer expects
# ----------------


async def test_drift_read_in_graph_is_announced_though_exchange_could_not_be_read(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Half")
    await fleet.watch(scenario, "C0HALF")
    scenario.revoke(GRAPH_APP_ID, "Mail.ReadWrite")
    outage = fleet.microsoft.fail(r"InvokeCommand", 500, service="exchange")  # not retried: read as unknown
    try:
        first = await fleet.sweep()
        assert first["unknown"] == 1, "the verdict could not be made"
        (drift,) = [fleet.posts("C0HALF")[0]]
        assert drift["text"].startswith("Drift: Half") and "Mail.ReadWrite" in text_of(drift)
        await fleet.sweep()
    finally:
        fleet.microsoft.faults.remove(outage)
    posts = fleet.posts("C0HALF")
    assert len(posts) == 2 and "twice in a row" in posts[1]["text"], "and the unreadable half after two sweeps"


async def test_snooze_quiets_only_the_channel_that_snoozed(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Shared")
    await fleet.watch(scenario, "C0SNOOZED")
    await fleet.watch(scenario, "C0AWAKE")
    assert await fleet.runtime.drift.snooze(scenario.tenant_id, "C0SNOOZED", now=datetime.now(UTC)) is not None
    scenario.revoke(GRAPH_APP_ID, "User.Read.All")
    await fleet.sweep()
    assert fleet.posts("C0SNOOZED") == []
    (awake,) = fleet.posts("C0AWAKE")
    assert awake["text"].startswith("Drift: Shared")


async def test_a_recheck_in_one_channel_tells_every_other_watching_channel(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Rechecked")
    await fleet.watch(scenario, "C0CLICKED")
    await fleet.watch(scenario, "C0OTHER")
    scenario.revoke(GRAPH_APP_ID, "User.Read.All")
    _, change, _ = await fleet.runtime.drift.recheck(scenario.tenant_id, "C0CLICKED", now=datetime.now(UTC))
    assert change is not None and change.drifted, "the clicked channel is answered in place"
    await until(lambda: fleet.posts("C0OTHER"), within=30, what="the other channel told")
    scenario.grant_all(GRAPH_APP_ID, "User.Read.All")
    await fleet.sweep()  # and the recovery reaches both
    await fleet.settled()
    other = fleet.posts("C0OTHER")
    assert [p["text"].split(":")[0] for p in other] == ["Drift", "Recovered"]
    assert [p["text"].split(":")[0] for p in fleet.posts("C0CLICKED")] == ["Recovered"]


async def test_a_broken_subscription_is_mended_by_the_next_post_that_gets_through(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Mended")
    await fleet.watch(scenario, "C0MEND")
    scenario.revoke(GRAPH_APP_ID, "User.Read.All")
    fleet.fake.fail("chat.postMessage", error="not_in_channel", times=1)
    await fleet.sweep()
    assert ("C0MEND", scenario.tenant_id) in await fleet.runtime.drift.store.broken()
    scenario.grant_all(GRAPH_APP_ID, "User.Read.All")  # the bot was invited back; the permission came back too
    await fleet.sweep()
    assert fleet.posts("C0MEND")[0]["text"].startswith("Recovered: Mended")
    assert await fleet.runtime.drift.store.broken() == {}


async def test_a_channel_whose_announcements_expired_unsent_leaves_the_waiting_list(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Expired")
    await fleet.watch(scenario, "C0EXPIRED")
    drift = fleet.runtime.drift
    sweep = "20261205T000000-expired"
    await drift.store.start_sweep(sweep, 1, datetime.now(UTC))  # a sweep that never finishes
    scenario.revoke(GRAPH_APP_ID, "User.Read.All")
    report = await drift.check(scenario.tenant_id, priority=Priority.HIGH)
    await drift.record(scenario.tenant_id, report, now=datetime.now(UTC), sweep=sweep)
    assert await drift.outbox_channels() == ["C0EXPIRED"]
    # A week passes with no worker able to post: Redis expires the channel's announcements.
    await fleet.runtime.redis.state.client.delete(drift.store.outbox.hash("C0EXPIRED"))
    assert await drift.deliverable("C0EXPIRED", datetime.now(UTC)) == ([], [])
    assert await drift.outbox_channels() == [], "doctor and the periodic look no longer count it"


async def test_a_deploy_mid_sweep_loses_nothing_the_previous_version_had_promised(fleet: Fleet) -> None:
    """The version before the outbox kept a sweep's changes in a list announced at its finish, and queued each post
    as a `post_message` job: both are taken over by the new workers, each said once."""
    scenario = fleet.tenant(name="Upgraded")
    await fleet.watch(scenario, "C0UPGRADE")
    drift = fleet.runtime.drift
    state = fleet.runtime.redis.state
    sweep = "20261205T000000-upgrade"
    await drift.store.start_sweep(sweep, 1, datetime.now(UTC))
    scenario.revoke(GRAPH_APP_ID, "User.Read.All")
    report = await drift.check(scenario.tenant_id, priority=Priority.HIGH)
    from bot.drift import model

    _, change = model.observe(await drift.store.snapshot(scenario.tenant_id), report, now=datetime.now(UTC))
    # As the previous version wrote them: the change in the sweep's list, the tenant counted.
    await state.client.rpush(state.key("sweep", sweep, "changes"), change.model_dump_json())
    await state.client.sadd(state.key("sweep", sweep, "done"), scenario.tenant_id)
    await fleet.queue.enqueue("post_message", key="post:revision:v6:C0UPGRADE", channel="C0UPGRADE",
                              text="New ITDR revision v6 (queued by the previous version)",
                              blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "v6"}}],
                              notification="revision:v6:C0UPGRADE", timeout=60, retries=1)
    await finish_now(fleet.queue, sweep)
    await until(lambda: len(fleet.posts("C0UPGRADE")) >= 2, within=30, what="both promises kept")
    await asyncio.sleep(2)
    await fleet.settled()
    texts = sorted(p["text"] for p in fleet.posts("C0UPGRADE"))
    assert len(texts) == 2 and texts[0].startswith("Drift: Upgraded") and texts[1].startswith("New ITDR revision")


async def test_slack_failing_with_500s_delays_the_announcement_and_never_loses_it(fleet: Fleet) -> None:
    scenario = fleet.tenant(name="Outage")
    await fleet.watch(scenario, "C0SLACKDOWN")
    scenario.revoke(GRAPH_APP_ID, "User.Read.All")
    fleet.fake.fail("chat.postMessage", status=500, error="internal_error", times=3)
    await fleet.sweep()
    await until(lambda: fleet.posts("C0SLACKDOWN"), within=60, what="posted once Slack answered again")
    await asyncio.sleep(2)
    (message,) = fleet.posts("C0SLACKDOWN")
    assert message["text"].startswith("Drift: Outage")
    assert len([c for c in fleet.fake.calls_to("chat.postMessage") if not c.ok]) == 3
