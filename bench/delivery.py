"""Drift delivery bench: a sweep's announcements (the outbox) delivered by real `itdr worker` processes.

    REDIS_URL=redis://127.0.0.1:6379 .venv/bin/python bench/delivery.py [--changes 3000] [--channels 300]
        [--workers 2] [--slack-latency 0.05]

Two sweeps are recorded in-process, straight into Redis as the sweep's check jobs record them (each tenant's
baseline, then the same tenant losing one permission in the sweep: one transaction per tenant writing the snapshot,
the change and one pending announcement per watching channel), then finished as a worker finishes a sweep:

* `--changes` tenants watched by one channel: more than ITDR_DIGEST_THRESHOLD, so one digest;
* `--channels` tenants each watched by its own channel: one message per channel.

`--workers` `itdr worker` processes deliver, posting to a stand-in Slack that answers after `--slack-latency`
seconds and counts every chat.postMessage per channel. Printed: the recording rate, the wall time from the finish
being queued to the last post accepted, posts per second, and duplicates and misses (both must be 0). Every child
runs in its own session and is stopped; every key is deleted afterwards, SAQ's included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from _harness import AUTH_TEST, StandIn, child_env, forget_keys, run_with_redis, spawn, stop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.drift.service import DriftService  # noqa: E402
from bot.drift.store import DriftStore, WatchedTenant  # noqa: E402
from bot.drift.sweep import finish_now, queue_for  # noqa: E402
from bot.readiness.model import CheckGroup, CheckItem, CheckStatus, Report, TenantInfo, Verdict  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from bot.store import RedisConnections  # noqa: E402
from catalog import load_catalog  # noqa: E402

BOT_TOKEN = "xoxb-bench-delivery-token"


class CountingSlack(StandIn):
    """Slack's chat.postMessage, answering after `latency` and counting posts per channel."""

    def __init__(self, latency: float) -> None:
        super().__init__()
        self.latency = latency
        self.posts: Counter[str] = Counter()
        self.last_post = 0.0

    async def handle(self, path: str, body: bytes) -> bytes:
        method = path.removeprefix("/api/").split("?", 1)[0]
        if method == "auth.test":
            return AUTH_TEST
        await asyncio.sleep(self.latency)
        try:
            channel = str(json.loads(body).get("channel"))
        except ValueError:
            channel = (parse_qs(body.decode()).get("channel") or ["?"])[0]
        self.posts[channel] += 1
        self.last_post = time.perf_counter()
        return json.dumps({"ok": True, "channel": channel, "ts": f"{time.time():.6f}"}).encode()


def report(tenant: str, name: str, status: CheckStatus, at: datetime) -> Report:
    item = CheckItem(id="graph.Domain.Read.All", status=status, title="Domain.Read.All", detail="",
                     catalog_name="Domain.Read.All", group=CheckGroup.graph)
    verdict = Verdict.ready if status is CheckStatus.passed else Verdict.blocked
    return Report(tenant=TenantInfo(id=tenant, name=name), catalog_version="v6", satisfied_version=None,
                  verdict=verdict, items=[item], checked_at=at.isoformat())


async def record_sweep(drift: DriftService, sweep: str, rows: list[tuple[str, str, str]]) -> float:
    """Watch `rows` (tenant, name, channel), read each as good, then as having lost a permission in `sweep`; the
    seconds the sweep's records took."""
    now = datetime.now(UTC)
    await drift.store.watch_many([(WatchedTenant(id=t, name=n, added_by="bench", added_at=now), c)
                                  for t, n, c in rows])
    for tenant, name, _ in rows:
        await drift.record(tenant, report(tenant, name, CheckStatus.passed, now - timedelta(hours=6)),
                           now=now - timedelta(hours=6), sweep=None)
    await drift.store.start_sweep(sweep, len(rows), now)
    started = time.perf_counter()
    for tenant, name, _ in rows:
        await drift.record(tenant, report(tenant, name, CheckStatus.failed, now), now=now, sweep=sweep)
    return time.perf_counter() - started


async def deliver(drift: DriftService, queue: Any, slack: CountingSlack, sweep: str, expected: Counter[str],
                  within: float, procs: list[Any]) -> tuple[float, dict[str, Any]]:
    """Finish the sweep; the seconds until its last announcement was posted, and what was posted."""
    slack.posts.clear()
    started = time.perf_counter()
    await finish_now(queue, sweep)
    deadline = started + within
    while (progress := await drift.progress(sweep)) is None or not progress.delivered:
        if time.perf_counter() > deadline or any(proc.poll() is not None for proc in procs):
            raise RuntimeError(f"not delivered within {within:g} s (or a worker exited): {progress}")
        await asyncio.sleep(0.05)
    elapsed = slack.last_post - started
    await asyncio.sleep(2)  # a duplicate would arrive now
    duplicates = sum(max(0, slack.posts[c] - n) for c, n in expected.items())
    missing = sum(max(0, n - slack.posts[c]) for c, n in expected.items())
    return elapsed, {"posts": sum(slack.posts.values()), "duplicates": duplicates, "missing": missing,
                     "notified": progress.notified}


async def run(redis_url: str, args: argparse.Namespace) -> int:
    prefix = f"itdr-bench-delivery:{uuid.uuid4().hex[:8]}:"
    slack = CountingSlack(args.slack_latency)
    await slack.start()
    settings = load_settings(_env_file=None, redis_url=redis_url, redis_prefix=prefix)
    redis = RedisConnections(redis_url, prefix)
    drift = DriftService(load_catalog(), DriftStore(redis.state), None)
    env = {k: v for k, v in child_env(ROOT).items() if not k.startswith(("ITDR_", "REDIS_"))} | {
        "REDIS_URL": redis_url, "REDIS_PREFIX": prefix, "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": slack.api_url, "LOG_LEVEL": "WARNING", "ITDR_SWEEP_CRON": "0 0 1 1 *",
        "ITDR_WORKER_CONCURRENCY": str(args.concurrency),
        # A worker needs the checking app's settings; nothing here is checked, so Microsoft is never asked.
        "ITDR_CLIENT_ID": str(uuid.uuid4()), "ITDR_CLIENT_SECRET": "bench-unused-secret",
        "ITDR_TARGET_APP_ID": str(uuid.uuid4())}
    procs = []
    try:
        one = [(str(uuid.uuid4()), f"Tenant {n:05d}", "C0ONE") for n in range(args.changes)]
        many = [(str(uuid.uuid4()), f"Tenant {n:05d}", f"C0MANY{n:05d}") for n in range(args.channels)]
        recorded = {"one": await record_sweep(drift, "bench-one", one),
                    "many": await record_sweep(drift, "bench-many", many)}
        procs = [spawn([sys.executable, "-m", "bot.cli", "worker"], cwd=ROOT, env=env) for _ in range(args.workers)]
        await asyncio.sleep(3)  # started (the first start only records the catalog revision)
        queue = queue_for(redis, settings)
        results = {
            "one": await deliver(drift, queue, slack, "bench-one", Counter({"C0ONE": 1}), args.timeout, procs),
            "many": await deliver(drift, queue, slack, "bench-many", Counter(c for _, _, c in many), args.timeout,
                                  procs),
        }
    finally:
        stop(procs)
        await slack.aclose()
        await redis.aclose()
        await forget_keys(redis_url, prefix)
        await forget_keys(redis_url, f"saq:*{prefix}")
    print(f"delivery bench: {args.workers} worker(s) x{args.concurrency}, Slack answering in "
          f"{args.slack_latency * 1000:.0f} ms")
    for name, rows, what in (("one", args.changes, f"{args.changes} changed tenants in one channel"),
                             ("many", args.channels, f"{args.channels} channels, one changed tenant each")):
        elapsed, posted = results[name]
        posts = posted["posts"]
        rate = f" ({posts / max(elapsed, 1e-9):.0f}/s)" if posts > 1 else ""
        print(f"  {what}: recorded {rows / recorded[name]:,.0f} tenants/s; finish queued → last post accepted "
              f"{elapsed:.2f} s; {posts} post{'s' if posts != 1 else ''}{rate}, "
              f"{posted['notified']} tenants notified, duplicates {posted['duplicates']}, "
              f"missing {posted['missing']}")
    wrong = any(posted["duplicates"] or posted["missing"] for _, posted in results.values())
    return 1 if wrong else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=3000)
    parser.add_argument("--channels", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--slack-latency", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    return run_with_redis(lambda url: run(url, args))


if __name__ == "__main__":
    sys.exit(main())
