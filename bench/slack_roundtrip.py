"""Round-trip benchmark: `/itdr why` over HTTP, itdr-bot beside a minimal Bolt app that only acks.

    .venv/bin/python bench/slack_roundtrip.py [--requests 1000] [--rounds 5] [--concurrency 1 50]
    .venv/bin/python bench/slack_roundtrip.py --legacy-response-url --root /path/to/older/checkout

`--root` serves the itdr app of another checkout (default: this one) with the python running this file, so the
same harness measures an older version of the code.

What is measured, per request: the wall time in the load client from writing a correctly signed slash command
(`/itdr why QUERY`, a fresh trigger_id each time, so Redis dedup claims every one) onto an already open
keep-alive connection until the last byte of the HTTP response has been read.

* itdr: the answer rides on the ack, so the request is complete when the response is back. Its JSON body is
  then checked (outside the clock): `response_type` ephemeral, blocks present, and `text` right for the query
  (the item's name, or "No catalog entry is named …" for the typo). A wrong answer is counted, shown, and fails
  the run (exit status 1); a status other than 200 stops it at once.
* itdr with `--legacy-response-url` (for code before answers rode on the ack, e.g. 13ffa0e): the ack must be
  empty and the clock stops when both the ack and the answer POSTed to the response_url have arrived; the
  POSTed `text` is checked the same way.
* minimal: a Bolt AsyncApp on the same Starlette + uvicorn stack (same uvicorn options as `itdr serve`) whose
  /itdr listener only calls ack(); complete when the (empty) 200 is back. The baseline.
* null: a few lines of asyncio that answer every request with an empty 200: the harness's own floor
  (client, loopback TCP, one Python event loop), printed so you can see the client is not what is measured.

Each level of concurrency C runs C clients in a closed loop (each its own keep-alive connection, a new request
as soon as its previous one is complete). How the numbers are kept about the apps, not the harness:

* one process per app (uvicorn, one worker, as `itdr serve`), plus the parent, which is the load client and the
  stand-in Slack (auth.test; the response_url receiver in legacy mode). The client speaks HTTP/1.1 over raw
  asyncio streams (no HTTP library), builds and signs each request before starting its clock, and pauses its
  garbage collector while measuring; its CPU time per request is printed next to the apps'.
* one app is loaded at a time: in each of `--rounds` rounds per level, minimal and itdr take turns (the order
  alternates between rounds) so drifting background load hits both alike; the app not being loaded sits idle
  (its CPU use meanwhile is printed: it should be ~0).
* each app is warmed up before it is measured: 50 sequential requests (auth.test, caches, code paths), then
  the level's connections are opened and 2 x C requests sent at that concurrency. A connection left idle longer
  than uvicorn keeps it (5 s, while the other app has its turn) is reopened before its next clock starts.

Why not an HTTP client library: httpx.AsyncClient (the earlier version of this bench, in the same process as the
response_url receiver) against the null server at 50 clients took a median 78 ms, p99 490 ms and 2.2 ms of its own
CPU per request, several times what either app costs, so the old 50-client figures were mostly the client's.

Reading the figures. Slack itself is not in the loop (its network time is the same for both apps). At 1 client
the minimal app takes 10-12 ms however little it does: Bolt's asyncio listener runner (process_before_response off,
the default) looks every 10 ms whether the listener has acked yet. itdr runs with process_before_response on and
its listeners return at their ack (handlers/acking.py), so its answer leaves at once. At C clients one uvicorn
worker (one core) is the limit, so a request waits for the C - 1 ahead of it: the latency is about C x the app's
CPU time per request and the median ratio at 50 is the ratio of the two apps' CPU per request, printed below the
table.

Targets (issue 7, item 6): itdr median <= 1.2 x minimal at 1 and 50 clients, itdr p99 < 50 ms (checked at
every level; at 1 client it always holds).
Redis: REDIS_URL when set (its bench keys are deleted afterwards), otherwise an embedded one as `itdr serve` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from _harness import (
    AUTH_TEST,
    Connection,
    StandIn,
    Tally,
    child_env,
    forget_keys,
    free_port,
    metered,
    pct,
    run_main,
    serve_bolt,
    serve_null,
    signed_post,
    spawn,
    stop,
    wait_listening,
)

ROOT = Path(__file__).resolve().parents[1]
BOT_TOKEN = "xoxb-bench-bot-token"
SIGNING_SECRET = "bench-signing-secret-0123456789"
# Query → how the answer's fallback text must start.
QUERIES = {
    "Mail.ReadWrite": "Mail.ReadWrite: ",
    "Exchange Administrator": "Exchange Administrator: ",
    "AuditLog.Read.All": "AuditLog.Read.All: ",
    "mail.readwite": "No catalog entry is named mail.readwite",
    "User.Read.All": "User.Read.All: ",
}
QUERY_LIST = tuple(QUERIES)
APPS = ("minimal", "itdr")
TARGET_RATIO = 1.2
TARGET_P99_MS = 50.0
WARMUP_SEQUENTIAL = 50
ANSWER_TIMEOUT = 30.0

# ----------------
#  children: the apps under test
# ----------------


def serve_itdr(port: int, api_url: str) -> None:
    """The itdr app exactly as `itdr serve` runs it (REDIS_URL / REDIS_PREFIX come from the parent)."""
    try:
        from bot.settings import load_settings
    except ImportError:  # before the Runtime (13ffa0e and older)
        from bot.app import load_settings  # type: ignore[attr-defined,no-redef]
    from bot.logging import setup_logging
    from bot.server import serve

    settings = load_settings(
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=api_url,
        port=port,
        log_level="WARNING",
    )
    setup_logging("WARNING")
    serve(settings, host="127.0.0.1")


def serve_minimal(port: int, api_url: str) -> None:
    """A Bolt app whose /itdr listener only acks, on the same stack and uvicorn options as `itdr serve`."""

    def register(app: Any) -> None:
        @app.command("/itdr")
        async def only_ack(ack: Any) -> None:
            await ack()

    serve_bolt(port, api_url, BOT_TOKEN, SIGNING_SECRET, register)


CHILDREN = {"itdr": serve_itdr, "minimal": serve_minimal, "null": lambda port, api_url: serve_null(port)}

# ----------------
#  parent: stand-in Slack, load client, report
# ----------------


class Slack(StandIn):
    """auth.test for both apps and, in legacy mode, the response_url receiver that completes an itdr answer."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[str, asyncio.Future[tuple[float, bytes]]] = {}

    async def handle(self, path: str, body: bytes) -> bytes:
        if path.startswith("/response/"):
            future = self.waiting.pop(path.removeprefix("/response/"), None)
            if future is not None and not future.done():
                future.set_result((time.perf_counter(), body))
            return b'{"ok": true}'
        return AUTH_TEST


def slash_command(port: int, text: str, response_url: str, trigger_id: str) -> bytes:
    """The raw HTTP request Slack sends for `/itdr TEXT`, signed now."""
    body = urlencode({
        "command": "/itdr", "text": text, "team_id": "T111", "user_id": "U111", "channel_id": "C111",
        "response_url": response_url, "trigger_id": trigger_id,
    }).encode()
    return signed_post(port, body, SIGNING_SECRET)


def check_answer(payload: dict[str, Any], expected: str) -> str | None:
    """Why this answer is wrong, or None."""
    text = payload.get("text")
    if not isinstance(text, str) or not text.startswith(expected):
        return f"text {str(text)[:80]!r} does not start with {expected!r}"
    if not payload.get("blocks"):
        return "no blocks"
    if payload.get("response_type", "ephemeral") != "ephemeral":
        return f"response_type {payload.get('response_type')!r}"
    return None


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    legacy: bool = False  # itdr before answers rode on the ack: wait for the response_url POST
    wrong: list[str] = field(default_factory=list)
    sent: int = 0

    @property
    def answers(self) -> bool:
        return self.name == "itdr"


class Client(Connection):
    """One keep-alive connection of the load client (see `Connection`), sending slash commands."""

    @classmethod
    async def open(cls, port: int) -> Client:
        client = cls(port)
        await client.connect()
        return client

    async def one(self, target: Target, slack: Slack) -> float:
        """One slash command; the seconds from sending it until it is complete (see the module docstring)."""
        n = target.sent
        target.sent += 1
        query = QUERY_LIST[n % len(QUERY_LIST)]
        rid = uuid.uuid4().hex
        raw = slash_command(target.port, f"why {query}", f"http://127.0.0.1:{slack.port}/response/{rid}",
                            f"{n}.{rid}")
        posted: asyncio.Future[tuple[float, bytes]] | None = None
        if target.answers and target.legacy:
            posted = asyncio.get_running_loop().create_future()
            slack.waiting[rid] = posted
        await self.ready()
        started, done, body = await self.exchange(raw, target.name)
        if not target.answers:
            return done - started
        if posted is not None:
            if body:
                raise RuntimeError("this itdr answers in the ack: run without --legacy-response-url")
            arrived, body = await asyncio.wait_for(posted, ANSWER_TIMEOUT)
            done = max(done, arrived)
        elif not body:
            raise RuntimeError("this itdr acks without an answer: run it with --legacy-response-url")
        if problem := check_answer(json.loads(body), QUERIES[query]):
            target.wrong.append(f"why {query}: {problem}")
        return done - started


async def batch(target: Target, clients: list[Client], slack: Slack, requests: int, idle: list[Target]) -> Tally:
    """`requests` measured slash commands, `len(clients)` at a time."""
    counter = iter(range(requests))
    tally = Tally()

    async def worker(client: Client) -> None:
        for _ in counter:
            tally.samples.append(await client.one(target, slack))

    with metered(tally, target.proc.pid, [other.proc.pid for other in idle]):
        await asyncio.gather(*(worker(client) for client in clients))
    return tally


async def warm_up(target: Target, slack: Slack, concurrency: int) -> list[Client]:
    """The level's connections, opened and warmed with 2 x concurrency requests (plus a sequential warm-up
    the first time)."""
    clients = [await Client.open(target.port) for _ in range(concurrency)]
    if target.sent == 0:
        for _ in range(WARMUP_SEQUENTIAL):
            await clients[0].one(target, slack)
    await batch(target, clients, slack, 2 * concurrency, [])
    return clients


def row(concurrency: int, name: str, tally: Tally) -> str:
    median = statistics.median(tally.samples) * 1000
    return f"{concurrency:>7} {name:>8} {median:>10.2f} {pct(tally.samples, 0.99):>8.2f}"


async def measure_level(
    targets: dict[str, Target], slack: Slack, concurrency: int, requests: int, rounds: int
) -> dict[str, Tally]:
    clients = {name: await warm_up(target, slack, concurrency) for name, target in targets.items()}
    tallies = {name: Tally() for name in targets}
    try:
        per_round = max(1, requests // rounds)
        for r in range(rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for name in order:
                idle = [t for other, t in targets.items() if other != name]
                tallies[name].add(await batch(targets[name], clients[name], slack, per_round, idle))
    finally:
        for level_clients in clients.values():
            for client in level_clients:
                await client.close()
    return tallies


REDIS_PREFIX = f"itdr-bench:{uuid.uuid4().hex[:8]}:"


def spawn_target(name: str, api_url: str, root: Path) -> Target:
    port = free_port()
    proc = spawn([sys.executable, __file__, f"--child={name}", f"--port={port}", f"--api-url={api_url}"],
                 cwd=root, env=child_env(root, REDIS_PREFIX=REDIS_PREFIX))
    return Target(name, port, proc)


async def run(args: argparse.Namespace) -> int:
    slack = Slack()
    await slack.start()
    api_url = slack.api_url
    targets: dict[str, Target] = {}
    try:
        for name in ("null", *APPS):
            targets[name] = spawn_target(name, api_url, args.root)
        targets["itdr"].legacy = args.legacy_response_url
        for target in targets.values():
            await wait_listening(target.port, target.proc)
        mode = "answer POSTed to the response_url" if args.legacy_response_url else "answer in the ack"
        print(
            f"requests per level and app: {args.requests} in {args.rounds} rounds; itdr: {mode}; "
            f"redis: {os.environ.get('REDIS_URL') or 'embedded'}; cpus: {os.cpu_count()}; "
            f"load average: {os.getloadavg()[0]:.2f}"
        )
        print(f"targets: itdr median <= {TARGET_RATIO}x minimal at every level, itdr p99 < {TARGET_P99_MS:.0f} ms")
        print(f"{'clients':>7} {'app':>8} {'median ms':>10} {'p99 ms':>8}   ratio (median itdr / minimal)")
        cpu_lines = []
        for concurrency in args.concurrency:
            null = (await measure_level({"null": targets["null"]}, slack, concurrency, args.requests, 1))["null"]
            print(row(concurrency, "null", null))
            apps = {name: targets[name] for name in APPS}
            tallies = await measure_level(apps, slack, concurrency, args.requests, args.rounds)
            for name in APPS:
                print(row(concurrency, name, tallies[name]))
            medians = {name: statistics.median(tallies[name].samples) for name in APPS}
            ratio = medians["itdr"] / medians["minimal"]
            p99 = pct(tallies["itdr"].samples, 0.99)
            verdict = "ok" if ratio <= TARGET_RATIO and p99 < TARGET_P99_MS else "MISSED"
            print(f"{concurrency:>7} {'ratio':>8} {ratio:>10.2f}x {'':>8}   "
                  f"targets (<={TARGET_RATIO}x, p99<{TARGET_P99_MS:.0f}ms): {verdict}")
            per = {name: {k: getattr(tallies[name], k) / len(tallies[name].samples) * 1000
                          for k in ("server_cpu", "client_cpu", "idle_cpu")} for name in APPS}
            cost = {name: per[name]["server_cpu"] for name in APPS}
            cpu_lines.append(
                f"{concurrency:>7} clients: app minimal {cost['minimal']:.2f}, "
                f"itdr {cost['itdr']:.2f} ({cost['itdr'] / cost['minimal']:.2f}x); "
                f"load client {per['minimal']['client_cpu']:.2f} / {per['itdr']['client_cpu']:.2f}; "
                f"load client against null {null.client_cpu / len(null.samples) * 1000:.2f}; "
                f"idle app meanwhile {per['minimal']['idle_cpu']:.2f} / {per['itdr']['idle_cpu']:.2f}"
            )
        print("cpu ms per request (app process; load client while loading minimal / itdr; other app while idle):")
        for line in cpu_lines:
            print(line)
        wrong = targets["itdr"].wrong
        checked = targets["itdr"].sent
        print(f"load average: {os.getloadavg()[0]:.2f}; itdr answers checked: {checked}, wrong: {len(wrong)}")
        for problem in wrong[:5]:
            print(f"  wrong answer: {problem}")
        return 1 if wrong else 0
    finally:
        stop([target.proc for target in targets.values()])
        await slack.aclose()
        await forget_keys(os.environ.get("REDIS_URL"), REDIS_PREFIX)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per level and app")
    parser.add_argument("--rounds", type=int, default=5, help="turns per app and level (apps alternate)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--legacy-response-url", action="store_true",
                        help="itdr answers through the response_url (code before answers rode on the ack)")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose itdr app is measured")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        CHILDREN[args.child](args.port, args.api_url)
        return 0
    if args.requests < args.rounds or min(args.concurrency) < 1:
        parser.error("--requests must be at least --rounds, and every --concurrency at least 1")
    args.root = args.root.resolve()
    return run_main(lambda: run(args))  # Ctrl-C or SIGTERM: run() stops every child and deletes its keys first


if __name__ == "__main__":
    sys.exit(main())
