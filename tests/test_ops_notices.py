"""The ops channel: the checking app's credential expiry told once per threshold across workers and restarts, a
rejected secret told with its fix, a late sweep told once; without ITDR_OPS_CHANNEL, WARNING lines and doctor."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bot import doctor, ops
from bot.drift.sweep import queue_for
from bot.microsoft.http import Priority
from bot.ops import OpsStore
from bot.ops_monitor import OpsMonitor
from bot.runtime import Runtime
from bot.settings import Mode, Settings, load_settings
from bot.worker import build_worker
from tests.fakes.microsoft import FakeMicrosoft, TenantScenario, password_credential
from tests.fakes.slack import FakeSlack
from tests.test_slack_check import microsoft_settings

HOME_TENANT = "7d3e9c1a-2b4f-4a6e-9c8d-1e2f3a4b5c6d"
OPS = "C0OPSCHAN"
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def _nothing_noted_before() -> None:
    """A refused secret noted by an earlier test in this process is not this test's."""
    ops.take_rejected_secret()


@pytest.fixture
def home(microsoft: FakeMicrosoft) -> Iterator[FakeMicrosoft]:
    microsoft.add_tenant(TenantScenario(tenant_id=HOME_TENANT, domains=["msp2.onmicrosoft.com"]))
    microsoft.home_tenant_id = HOME_TENANT
    microsoft.password_credentials = [password_credential(microsoft.client_secret, NOW + dt.timedelta(days=10))]
    try:
        yield microsoft
    finally:
        microsoft.password_credentials = []
        microsoft.home_tenant_id = None
        microsoft.expired_secret = False


def ops_settings(microsoft: FakeMicrosoft, slack: FakeSlack, redis_url: str, redis_prefix: str,
                 **overrides: Any) -> Settings:
    values = microsoft_settings(microsoft) | {
        "slack_bot_token": slack.bot_token, "slack_api_url": slack.api_url, "redis_url": redis_url,
        "redis_prefix": redis_prefix, "itdr_home_tenant": HOME_TENANT, "itdr_ops_channel": OPS,
        "itdr_sweep_cron": "0 0 1 1 *",  # no sweep fires during the test
    } | overrides
    return load_settings(Mode.WORKER, _env_file=None, **values)


@contextlib.asynccontextmanager
async def worker(settings: Settings) -> AsyncIterator[OpsMonitor]:
    """A running `itdr worker`; yields its ops monitor once the checks it makes at start are done."""
    async with Runtime.open(settings, Mode.WORKER) as runtime:
        queue = queue_for(runtime.redis, settings)
        running = build_worker(runtime, queue, grace_seconds=0)
        task = asyncio.create_task(running.start())
        try:
            for _ in range(2000):  # the startup hook puts the monitor in the worker's context
                if "ops" in running.context:
                    break
                await asyncio.sleep(0.01)
            monitor: OpsMonitor = running.context["ops"]
            await asyncio.wait_for(monitor.first_pass.wait(), 20)
            yield monitor
        finally:
            await running.stop()
            await asyncio.wait_for(task, 20)


def ops_posts(slack: FakeSlack) -> list[dict[str, Any]]:
    return [call.args for call in slack.calls_to("chat.postMessage") if call.ok and call.args.get("channel") == OPS]


async def test_expiry_told_once_per_threshold_across_two_workers_and_a_restart(
        home: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> None:
    settings = ops_settings(home, fake_slack, redis_url, redis_prefix)
    async with worker(settings), worker(settings):
        pass
    (post,) = ops_posts(fake_slack)  # 10 days left: the 30- and 14-day thresholds are reached, told once
    assert post["text"].startswith("The checking app's client secret expires in 10 days")
    assert "New client secret" in post["text"] and "ITDR_CLIENT_SECRET" in post["text"]
    async with worker(settings):  # a restart
        pass
    assert len(ops_posts(fake_slack)) == 1
    async with Runtime.open(settings, Mode.WORKER) as runtime:  # four days later: the 7-day threshold
        later = OpsMonitor(runtime, clock=lambda: NOW + dt.timedelta(days=4))
        await asyncio.gather(later.check_credentials(), later.check_credentials())
    assert [post["text"].split(":")[0] for post in ops_posts(fake_slack)][1] == (
        "The checking app's client secret expires in 6 days")
    assert len(ops_posts(fake_slack)) == 2


async def test_without_an_ops_channel_a_warning_line_and_doctor(
        home: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    home.password_credentials = [password_credential(home.client_secret, NOW - dt.timedelta(hours=3))]
    settings = ops_settings(home, fake_slack, redis_url, redis_prefix, itdr_ops_channel=None)
    caplog.set_level(logging.WARNING, logger="bot.ops_monitor")
    async with Runtime.open(settings, Mode.WORKER) as runtime:
        for _ in range(2):
            await OpsMonitor(runtime).check_credentials()
    warnings = [r.getMessage() for r in caplog.records if r.name == "bot.ops_monitor"]
    assert len(warnings) == 1 and warnings[0].startswith("The checking app's client secret has expired")
    assert ops_posts(fake_slack) == []
    findings = await doctor.run_checks(settings)
    events = next(finding for finding in findings if finding.check == "ops events")
    assert events.status is doctor.Status.warn and "client secret has expired" in events.detail


async def test_a_rejected_secret_is_told_with_its_fix(
        home: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> None:
    home.expired_secret = True  # Entra answers AADSTS7000222
    settings = ops_settings(home, fake_slack, redis_url, redis_prefix)
    async with Runtime.open(settings, Mode.WORKER) as runtime:
        await OpsMonitor(runtime).check_credentials()
        await OpsMonitor(runtime).check_credentials()
    (post,) = ops_posts(fake_slack)
    assert post["text"].startswith("Entra ID rejects the checking app's secret")
    assert "AADSTS7000222" in post["text"] and "New client secret" in post["text"]


async def test_a_sweep_that_did_not_start_is_told_once(
        home: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> None:
    settings = ops_settings(home, fake_slack, redis_url, redis_prefix, itdr_sweep_cron="0 */6 * * *")
    at = NOW.replace(hour=3, minute=30)  # the 00:00 sweep is due
    async with Runtime.open(settings, Mode.WORKER) as runtime:
        await runtime.state.client.hset(f"{redis_prefix}watch:tenants", "contoso.onmicrosoft.com", "{}")
        store = OpsStore(runtime.state)
        await store.sweep_event("started", at - dt.timedelta(hours=9))  # the 18:00 one ran, the 00:00 did not
        await store.sweep_event("finished", at - dt.timedelta(hours=8, minutes=50))
        monitor = OpsMonitor(runtime, clock=lambda: at)
        await monitor.check_sweep()
        await OpsMonitor(runtime, clock=lambda: at).check_sweep()
    (post,) = ops_posts(fake_slack)
    assert post["text"].startswith("A scheduled sweep did not start")
    assert "00:00 UTC" in post["text"]


async def test_the_worker_records_the_sweep_start_doctor_reads(
        home: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> None:
    settings = ops_settings(home, fake_slack, redis_url, redis_prefix)
    async with worker(settings) as monitor:
        queue = queue_for(monitor.runtime.redis, settings)
        await queue.enqueue("sweep", timeout=60, retries=1)
        for _ in range(500):
            started, _ = await monitor.store.sweep_times()
            if started is not None:
                break
            await asyncio.sleep(0.02)
        assert started is not None
        findings = await doctor.run_checks(settings)
    sweep = next(finding for finding in findings if finding.check == "sweep")
    assert sweep.detail.startswith(f"last sweep started {started.strftime('%Y-%m-%d %H:%M UTC')}")
    assert next(finding for finding in findings if finding.check == "workers").status is doctor.Status.ok


async def test_a_secret_refused_during_a_check_is_told_without_a_home_tenant(
        microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> None:
    from tests.test_readiness_check import complete_scenario

    scenario = microsoft.add_tenant(complete_scenario())
    settings = ops_settings(microsoft, fake_slack, redis_url, redis_prefix, itdr_home_tenant=None)
    microsoft.expired_secret = True
    try:
        async with Runtime.open(settings, Mode.WORKER) as runtime:
            report = await runtime.drift.check(scenario.tenant_id, priority=Priority.LOW)
            assert report.verdict.value == "unknown"
            monitor = OpsMonitor(runtime)
            await monitor.check_noted()
            await monitor.check_noted()  # nothing new noted: nothing more told
    finally:
        microsoft.expired_secret = False
    (post,) = ops_posts(fake_slack)
    assert post["text"].startswith("Entra ID rejects the checking app's secret")
    assert "New client secret" in post["text"]


async def test_an_ops_channel_the_bot_is_not_in_gets_a_warning_line_once(
        home: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    fake_slack.fail("chat.postMessage", error="not_in_channel")
    settings = ops_settings(home, fake_slack, redis_url, redis_prefix)
    caplog.set_level(logging.WARNING, logger="bot.ops_monitor")
    async with Runtime.open(settings, Mode.WORKER) as runtime:
        await OpsMonitor(runtime).check_credentials()
        await OpsMonitor(runtime).check_credentials()  # not retried every check: no retry mends it
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "bot.ops_monitor"]
    assert "expires in 10 days" in warning and "not posted to ITDR_OPS_CHANNEL: not_in_channel" in warning
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


async def test_a_state_reset_is_told_once_across_two_workers(
        home: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> None:
    settings = ops_settings(home, fake_slack, redis_url, redis_prefix)
    async with worker(settings) as first, worker(settings) as second:
        told_before = len(ops_posts(fake_slack))
        state = first.runtime.state
        async with state.guard("forget the state") as redis:  # what a flush does to the bot's keys
            await redis.delete(state.key("epoch"))
        await asyncio.gather(first.check_reset(), second.check_reset(), first.check_reset())
    resets = [post for post in ops_posts(fake_slack)[told_before:] if post["text"].startswith("Redis lost")]
    assert len(resets) == 1
    assert "The bot's state was reset on" in resets[0]["text"] and "appendonly" in resets[0]["text"]


async def test_a_stopping_worker_is_not_held_by_a_monitor_whose_cancellation_was_swallowed(
        home: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> None:
    """redis-py can report a call cancelled mid-flight as a fault, which the monitor outlives as a Redis outage: it
    then slept a minute, and a worker stopping (a deploy) waited for it."""
    from bot.store import StateUnavailable

    settings = ops_settings(home, fake_slack, redis_url, redis_prefix)
    async with Runtime.open(settings, Mode.WORKER) as runtime:
        monitor = OpsMonitor(runtime)
        entered = asyncio.Event()

        async def heartbeat(at: dt.datetime) -> None:
            entered.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise StateUnavailable("record the heartbeat") from None

        monitor.store.heartbeat = heartbeat  # type: ignore[method-assign]
        await monitor.start({"worker": build_worker(runtime, queue_for(runtime.redis, settings))})
        await asyncio.wait_for(entered.wait(), 10)
        started = asyncio.get_running_loop().time()
        stopping = asyncio.create_task(monitor.stop({}))
        done, _ = await asyncio.wait({stopping}, timeout=3)
        assert done, "the monitor still held the stopping worker after 3 s"
        assert asyncio.get_running_loop().time() - started < 3
        if not done:
            monitor._stopping.set()
            await stopping
