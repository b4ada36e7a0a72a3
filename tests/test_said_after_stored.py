"""Nothing said in public before it is stored: on a Redis that refuses writes, an acting command says so privately
and posts nothing in the channel."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from bot.store import EmbeddedRedis
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SIGNING_SECRET, SlackSim
from tests.ports import unused_port
from tests.test_drift import worker_settings
from tests.test_drift_slack import command, tenant
from tests.test_drift_workers import worker_env
from tests.test_slack_check import microsoft_settings


@pytest.fixture
def refusing_writes() -> Iterator[str]:
    """A Redis that answers reads and refuses every write, as a primary that lost its replicas does (NOREPLICAS)."""
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("min-replicas-to-write", 1)
        client.close()
        yield server.url


async def test_watch_on_a_redis_refusing_writes_posts_nothing_in_the_channel(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any], refusing_writes: str
) -> None:
    running = serve_app(redis_url=refusing_writes, **microsoft_settings(microsoft))
    slack = SlackSim(running.events_url, fake_slack)
    try:
        _, answer = await command(slack, fake_slack, f"watch {tenant(microsoft).tenant_id}")
    finally:
        await slack.aclose()
    assert answer is not None and "I cannot record the watch" in answer["text"]
    assert answer.get("response_type") != "in_channel"
    assert fake_slack.calls_to("chat.postMessage") == [], "nothing announced that was not stored"


async def test_a_consent_killed_mid_way_is_told_on_the_next_attempt(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any], redis_url: str,
    redis_prefix: str, tmp_path: Path,
) -> None:
    """`itdr serve` SIGKILLed while it prepares a consent request: the next attempt replaces the "Preparing…"
    message it left, then answers as usual."""
    approvers = {"itdr_approvers": "U222", "itdr_state_secret": "a-state-secret-for-tests"}
    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix, **approvers)
    scenario = tenant(microsoft, "Killed", version="v5")
    port = unused_port()
    env = worker_env(settings, microsoft) | {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "ITDR_APPROVERS": "U222",
                                             "ITDR_STATE_SECRET": "a-state-secret-for-tests"}
    with (tmp_path / "serve.log").open("wb") as log:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "serve", "--port", str(port), "--host", "127.0.0.1", env=env,
            cwd=tmp_path, stdout=log, stderr=asyncio.subprocess.STDOUT)
    first = SlackSim(f"http://127.0.0.1:{port}/slack/events", fake_slack, http=httpx.AsyncClient(timeout=30))
    state = aioredis.Redis.from_url(redis_url)
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await first.http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    break
            await asyncio.sleep(0.1)
        microsoft.latency = 3.0  # the check is slow: the kill lands while it runs
        response, form = await first.command(f"consent {scenario.tenant_id}")
        assert "Preparing the consent request" in response.json()["text"]
        for _ in range(100):
            if await state.zcard(f"{redis_prefix}consent:preparing"):
                break
            await asyncio.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        await server.wait()
    finally:
        microsoft.latency = 0.0
        if server.returncode is None:
            server.kill()
            await server.wait()
        await first.aclose()
        await state.aclose()
    running = serve_app(**microsoft_settings(microsoft), **approvers)
    again = SlackSim(running.events_url, fake_slack)
    try:
        # A new command: its own trigger_id (this client's counter starts where the first one's did).
        _, retry = await again.command(f"consent {scenario.tenant_id}", trigger_id="T-after-the-kill")
        answer = await fake_slack.answer_at(retry["response_url"], within=20)
        told = await fake_slack.answer_at(form["response_url"], within=5)
    finally:
        await again.aclose()
    assert told.get("replace_original") is True, told
    assert "did not finish" in told["text"] and "A newer attempt took over" in told["text"]
    assert answer["text"].startswith("Posted the consent request for Killed")


async def test_an_attempt_lost_with_its_server_is_told_by_a_worker_after_a_while(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bot.consent.service
    from bot.runtime import Runtime
    from bot.settings import Mode
    from bot.worker import poll_consents

    monkeypatch.setattr(bot.consent.service, "ATTEMPT_GRACE_SECONDS", -3600)  # as if its time had long passed
    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix, itdr_approvers="U222",
                               itdr_state_secret="a-state-secret-for-tests")
    async with Runtime.open(settings, Mode.WORKER) as runtime:
        assert runtime.readiness is not None
        url = fake_slack.response_url()
        await runtime.consent.begin_attempt(runtime.readiness.request("contoso.onmicrosoft.com"), "U111", url)
        await poll_consents({"runtime": runtime})
        await poll_consents({"runtime": runtime})  # told once
    told = await fake_slack.answer_at(url)
    assert told.get("replace_original") is True
    assert "did not finish" in told["text"] and "/itdr consent contoso.onmicrosoft.com v6" in told["text"]
    assert len([c for c in fake_slack.responses() if c.path == "/" + url.split("/", 3)[3]]) == 1
