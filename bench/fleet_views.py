"""Fleet views bench: 10,000 watched tenants imported with `itdr tenants import` and swept by a real `itdr worker`
against the fake Microsoft, then the server time of the Slack views that read them.

    REDIS_URL=redis://127.0.0.1:6379 .venv/bin/python bench/fleet_views.py [--tenants 10000] [--big 250000]
        [--opens 200] [--latency 0.02] [--concurrency 40]

Steps (every child in its own session, always stopped; every key deleted afterwards, SAQ's included):

* the fake Microsoft of bench/sweep.py (`--tenants` tenants granting everything, `--latency` per request);
* `itdr tenants import FILE.csv` of those tenants over 4 channels, as a subprocess: its wall time and peak RSS
  (ru_maxrss of the waited child);
* one `itdr worker` sweeps them (`start_sweep`, as `itdr sweep` does), then the fleet summary is brought up to date
  (`summarise_fleet`, the worker's job, run here in-process and timed);
* server time, in-process against the same Redis, `--opens` times each: App Home (`handle_app_home_opened` with a
  Slack client that returns at once: reading the summary and building the view), `/itdr fleet` and `/itdr watching`
  (a channel watching a quarter of the fleet: its first page) as their listeners build the ack. p50 and p99;
* `--big` tenants (default 250,000; 0 skips it) imported into a second prefix, never swept: import time and peak
  RSS, `itdr tenants` and `itdr fleet` wall time, the summary's computation and `/itdr fleet`'s server time.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _harness import child_env, forget_keys, pct, run_with_redis, spawn, stop
from sweep import CHANNELS, ROOT, Fake, Slack, tenant_ids, worker_env


class _Client:
    """A Slack client whose views.publish returns at once: the time measured is ours."""

    async def views_publish(self, **kwargs: Any) -> dict[str, Any]:
        return {"ok": True}


def _write_csv(path: Path, tenants: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tenant", "channel"])
        for n, tenant in enumerate(tenants):
            writer.writerow([tenant, CHANNELS[n % len(CHANNELS)]])


def _itdr(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run `itdr ARGV`: wall seconds, its own peak RSS in MB (wait4's rusage of that child), its stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", *argv], cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"itdr {' '.join(argv)}: exit {proc.returncode}: {err.read()[-500:].decode()}")
        return seconds, usage.ru_maxrss / 1024, out.read().decode()


async def _timed(times: list[float], work: Any) -> None:
    started = time.perf_counter()
    await work
    times.append(time.perf_counter() - started)


async def views(redis_url: str, prefix: str, opens: int) -> dict[str, list[float]]:
    """Server time of App Home, `/itdr fleet` and `/itdr watching`, `opens` times each."""
    from bot.drift.service import DriftService
    from bot.drift.store import DriftStore
    from bot.store import RedisConnections
    from catalog import load_catalog
    from handlers.blocks.drift import fleet_message, watching_message
    from handlers.events.app_home_opened import handle_app_home_opened

    catalog = load_catalog()
    connections = RedisConnections(redis_url, prefix)
    drift = DriftService(catalog, DriftStore(connections.state), None)
    client: Any = _Client()
    event = {"type": "app_home_opened", "user": "U0BENCH", "tab": "home"}

    async def fleet() -> None:
        fleet_message(await drift.fleet_summary(datetime.now(UTC))).to_ack()

    async def watching() -> None:
        rows, total = await drift.watching(CHANNELS[0])
        watching_message(CHANNELS[0], rows, datetime.now(UTC), total).to_ack()

    times: dict[str, list[float]] = {"App Home": [], "/itdr fleet": [], "/itdr watching": []}
    try:
        for _ in range(opens):
            await _timed(times["App Home"], handle_app_home_opened(event, client, catalog, drift))
            await _timed(times["/itdr fleet"], fleet())
            await _timed(times["/itdr watching"], watching())
    finally:
        await connections.aclose()
    return times


async def summarise(redis_url: str, prefix: str) -> tuple[float, int]:
    """Compute and store the summary as the worker's job does (whether or not it was up to date): seconds,
    tenants summarised."""
    from bot.drift.service import DriftService
    from bot.drift.store import DriftStore
    from bot.store import RedisConnections
    from catalog import load_catalog

    connections = RedisConnections(redis_url, prefix)
    try:
        drift = DriftService(load_catalog(), DriftStore(connections.state), None)
        started = time.perf_counter()
        fleet = await drift.fleet(datetime.now(UTC))
        await drift.store.save_fleet_summary(fleet.dump())
        return time.perf_counter() - started, fleet.tenants
    finally:
        await connections.aclose()


def _print_times(times: dict[str, list[float]]) -> None:
    for name, samples in times.items():
        print(f"  {name:<16} server time p50 {pct(samples, 0.5):6.1f} ms, p99 {pct(samples, 0.99):6.1f} ms "
              f"({len(samples)} opens)")


async def sweep_with_worker(args: argparse.Namespace, fake: Fake, slack: Slack, redis_url: str, prefix: str,
                            directory: Path) -> float:
    from bot.drift.store import DriftStore
    from bot.drift.sweep import queue_for, start_sweep
    from bot.settings import load_settings
    from bot.store import RedisConnections

    settings = load_settings(_env_file=None, redis_url=redis_url, redis_prefix=prefix, itdr_sweep_spread_seconds=0)
    connections = RedisConnections(redis_url, prefix)
    log = directory / "worker.log"
    env = worker_env(args, fake, slack.api_url, redis_url, prefix, 1)
    with log.open("wb") as out:
        worker = spawn([sys.executable, "-m", "bot.cli", "worker"], cwd=ROOT, env=env, stdout=out,
                       stderr=subprocess.STDOUT)
    try:
        store = DriftStore(connections.state)
        started = time.perf_counter()
        sweep = await start_sweep(queue_for(connections, settings), store, settings, now=datetime.now(UTC))
        while True:
            progress = await store.progress(sweep)
            if progress is not None and progress.done:
                break
            if worker.poll() is not None:
                raise RuntimeError("the worker exited:\n" + log.read_text(errors="replace")[-2000:])
            await asyncio.sleep(0.2)
        if progress.checked != args.tenants:
            raise RuntimeError(f"sweep: {progress.to_json()}")
        return time.perf_counter() - started
    finally:
        stop([worker])
        await connections.aclose()


async def run(args: argparse.Namespace, redis_url: str) -> int:
    directory = Path(tempfile.mkdtemp(prefix="itdr-bench-views-"))
    prefix = f"itdr-bench-views:{uuid.uuid4().hex[:8]}:"
    big_prefix = f"itdr-bench-views-big:{uuid.uuid4().hex[:8]}:"
    slack = Slack()
    await slack.start()
    fake: Fake | None = None
    try:
        print(f"Fleet views: {args.tenants} tenants imported and swept against the fake Microsoft "
              f"({args.latency * 1000:.0f} ms per request), redis {redis_url.split('@')[-1]}")
        if args.tenants:
            fake = Fake(args, directory)
            await fake.wait()
            tenants = tenant_ids(args.tenants, args.seed)
            _write_csv(directory / "tenants.csv", tenants)
            env = child_env(ROOT) | {"REDIS_URL": redis_url, "REDIS_PREFIX": prefix}
            seconds, rss, _ = _itdr(["tenants", "import", str(directory / "tenants.csv")], env)
            print(f"  import of {args.tenants} rows: {seconds:.1f} s, peak RSS {rss:.0f} MB")
            swept = await sweep_with_worker(args, fake, slack, redis_url, prefix, directory)
            print(f"  sweep by 1 worker x{args.concurrency}: {swept:.1f} s")
            seconds, count = await summarise(redis_url, prefix)
            print(f"  fleet summary computed (as summarise_fleet does): {seconds * 1000:.0f} ms for {count} tenants")
            _print_times(await views(redis_url, prefix, args.opens))
            seconds, _, listing = _itdr(["tenants"], env)
            print(f"  `itdr tenants`: {seconds:.1f} s ({len(listing.splitlines())} lines); "
                  f"`itdr fleet`: {_itdr(['fleet'], env)[0]:.1f} s")
            fake.stop()
            fake = None
        if args.big:
            big = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{args.seed}:{n}")) for n in range(args.big)]
            _write_csv(directory / "big.csv", big)
            del big
            env = child_env(ROOT) | {"REDIS_URL": redis_url, "REDIS_PREFIX": big_prefix}
            seconds, rss, _ = _itdr(["tenants", "import", str(directory / "big.csv")], env)
            size = (directory / "big.csv").stat().st_size / 1e6
            print(f"{args.big} tenants ({size:.1f} MB CSV), imported, never swept:")
            print(f"  import: {seconds:.1f} s, peak RSS {rss:.0f} MB")
            seconds, count = await summarise(redis_url, big_prefix)
            print(f"  fleet summary computed: {seconds * 1000:.0f} ms for {count} tenants")
            listed, fleet = _itdr(["tenants"], env)[0], _itdr(["fleet"], env)[0]
            print(f"  `itdr tenants`: {listed:.1f} s; `itdr fleet` (the summary up to date): {fleet:.1f} s")
            times = await views(redis_url, big_prefix, max(20, args.opens // 10))
            _print_times({"/itdr fleet": times["/itdr fleet"], "App Home": times["App Home"]})
        return 0
    finally:
        if fake is not None:
            fake.stop()
        await slack.aclose()
        for each in (prefix, big_prefix):
            await forget_keys(redis_url, each)
            await forget_keys(redis_url, f"saq:*{each}")
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=10_000,
                        help="tenants imported and swept (default 10000; 0 skips it)")
    parser.add_argument("--big", type=int, default=250_000, help="tenants of the import-only run (0: skip)")
    parser.add_argument("--opens", type=int, default=200, help="times each view is opened (default 200)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per Microsoft request (default 0.02)")
    parser.add_argument("--concurrency", type=int, default=40, help="checks in flight in the worker (default 40)")
    parser.add_argument("--fake-procs", type=int, default=1, help="fake Microsoft processes (default 1)")
    args = parser.parse_args()
    args.seed, args.root, args.log_level = uuid.uuid4().hex[:8], ROOT, "WARNING"
    sys.path.insert(0, str(ROOT))
    return run_with_redis(lambda redis_url: run(args, redis_url))


if __name__ == "__main__":
    sys.exit(main())
