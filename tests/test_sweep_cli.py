"""`itdr sweep` as a person runs it: it starts now, shows its progress on a terminal, and a second one at the same
time joins the first instead of counting nothing."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.slack import FakeSlack
from tests.test_drift import Fleet, running_worker, worker_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def fleet(microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str,
                redis_prefix: str) -> AsyncIterator[Fleet]:
    # The scheduled sweep's spread, as deployed: a sweep asked for by a person must not wait for it.
    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix, itdr_sweep_spread_seconds=1800)
    async with running_worker(settings, microsoft, fake_slack) as running:
        for n in range(2):
            await running.watch(running.tenant(name=f"Sweep {n}"), f"C0SWEEP{n}")
        yield running


def _env(settings: Settings) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ITDR_", "REDIS_", "LOG_"))}
    return base | {"PYTHONPATH": str(ROOT), "REDIS_URL": settings.redis_dsn or "",
                   "REDIS_PREFIX": settings.redis_prefix}


async def _itdr(settings: Settings, *argv: str, tty: bool = False) -> tuple[int, str, str]:
    """Run `itdr ARGV`; its stderr on a terminal when `tty`."""
    primary, secondary = pty.openpty() if tty else (-1, -1)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *argv, env=_env(settings), stdout=asyncio.subprocess.PIPE,
        stderr=secondary if tty else asyncio.subprocess.PIPE)
    if not tty:
        out, err = await asyncio.wait_for(process.communicate(), 60)
        return process.returncode or 0, out.decode(), err.decode()
    os.close(secondary)
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []

    def read() -> None:
        try:
            while chunk := os.read(primary, 4096):
                chunks.append(chunk)
        except OSError:  # the terminal closes with the process
            pass

    reader = loop.run_in_executor(None, read)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    await asyncio.wait_for(reader, 10)
    os.close(primary)
    return process.returncode or 0, out.decode(), b"".join(chunks).decode()


async def test_a_sweep_asked_for_starts_now_and_shows_its_progress_on_a_terminal(fleet: Fleet) -> None:
    fleet.microsoft.latency = 0.4  # checks take a moment: there is progress to show
    try:
        code, out, err = await _itdr(fleet.runtime.settings, "sweep", "--wait", "--timeout", "30", tty=True)
    finally:
        fleet.microsoft.latency = 0.0
    assert code == 0, err
    assert out.startswith("Sweep ") and "2 of 2 tenants checked" in out
    assert "Sweeping: " in err and "/2 checked" in err and "changed so far" in err
    # Piped or --json: the result alone.
    code, out, err = await _itdr(fleet.runtime.settings, "sweep", "--wait", "--json", "--timeout", "30")
    assert code == 0 and json.loads(out)["checked"] == 2
    assert "Sweeping" not in err


async def test_two_sweeps_at_once_the_second_joins_the_first(fleet: Fleet) -> None:
    fleet.microsoft.latency = 0.3
    try:
        first, second = await asyncio.gather(
            _itdr(fleet.runtime.settings, "sweep", "--wait", "--json", "--timeout", "30"),
            _itdr(fleet.runtime.settings, "sweep", "--wait", "--json", "--timeout", "30"))
        # Without --wait: one queues it, the other says it runs.
        answers = await asyncio.gather(_itdr(fleet.runtime.settings, "sweep"), _itdr(fleet.runtime.settings, "sweep"))
    finally:
        fleet.microsoft.latency = 0.0
    for code, out, err in (first, second):
        assert code == 0, err
        assert json.loads(out)["tenants"] == 2 and json.loads(out)["checked"] == 2, out
    running, queued = sorted(out for _, out, _ in answers)
    assert queued.startswith("Queued sweep "), answers
    sweep = queued.split()[2].rstrip(";")
    assert running.startswith(f"A sweep is already running (sweep {sweep}, started "), answers
    assert "`itdr sweep --wait` waits for it." in running
    await fleet.settled()
