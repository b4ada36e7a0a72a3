"""Consent bench: from an Approve click to the card update, itdr-bot beside a Bolt app that only acks the click.

    REDIS_URL=redis://127.0.0.1:6379 .venv/bin/python bench/consent.py [--clicks 1000] [--rounds 5]
        [--concurrency 1 50] [--contended-rounds 20] [--since v4|none]

What is measured, per click: the wall time from the moment the load client writes a correctly signed Approve click
(a `block_actions` interactivity POST, `payload=<json>`, as Slack sends it: the card's blocks in `message`, a
container naming the card's channel and ts, a fresh trigger_id and response_url) onto an already open keep-alive
connection

* itdr (`itdr serve`, run as `python -m bot.cli serve`, settings from the environment): until the stand-in Slack
  has read the `chat.update` of that card (matched by channel and ts): the approval is recorded in Redis (WATCH/
  MULTI, audit included), the approved card is rendered and sent to Slack. That is the moment the channel sees the
  card change. The click's ack (an empty 200) is checked and its time printed too ("itdr ack"), for reference.
  Outside the clock every update is checked: the card says "Approved by <@the clicker>", and each request got
  exactly one update and no private refusal; anything else is counted, shown, and fails the run (exit status 1).
* minimal: a Bolt AsyncApp on the same Starlette + uvicorn stack (same uvicorn options) whose
  `app.action("consent-approve")` only calls ack(); until its (empty) 200 has been read. The baseline.

Setup, never timed: every itdr click approves its own open request (one tenant each, its card "posted" at a
unique ts), created in Redis before each batch exactly as `/itdr consent` records a posted one
(`ConsentStore.save_new`: the request, its card, its expiry and the `requested` audit entry), with the button value
signed by `Signer.from_settings` with the same ITDR_STATE_SECRET as the server, under the server's REDIS_URL and
REDIS_PREFIX. A request asks what a first onboarding asks (`--since none`: every non-CPV item of the latest
revision, the biggest card), or what a tenant at `--since vN` lacks. ITDR_APPROVERS names one distinct user per
concurrent approver, ITDR_REQUIRED_APPROVALS is 1, so every click is an accepted approval causing one card update;
the requester is not among the clickers. No readiness check is configured (ITDR_CLIENT_ID etc. unset): approving
does not need one (the Grant link on the approved card then carries an empty client_id).

Levels: C concurrent approvers (1 and 50) each on their own keep-alive connection, in a closed loop (a new click
once the previous one is acked and, for itdr, its card updated), each clicking Approve on a different request.
Apps take turns as in `slack_roundtrip.py`: warm-up (50 sequential clicks the first time, then 2 x C), then
`--rounds` rounds per level alternating the order; the app not being loaded sits idle.

50 approvers on ONE request (`--contended-rounds`): all 50 clicks are written at once, each on its own connection.
itdr must make exactly one transition: one card update (timed for the click that won, to the chat.update) and 49
private refusals ("already approved by <@winner>", timed for each losing click to the arrival of its
response_url POST). The minimal app acks the same 50 clicks (click → ack).

Reading the figures. Slack itself is not in the loop (its network time is the same for both apps). The minimal app
uses Bolt's default asyncio listener runner, which looks every 10 ms whether the listener has acked: its ack never
leaves in less than ~10 ms. itdr's listeners return at their ack (handlers/acking.py) and record and update the
card in the background. At 50 one uvicorn worker (one core) is the limit, and
the latency is about 50 x the app's CPU per click, printed below the table with the load client's own.

Target (issue 8): itdr p50 / minimal p50 <= 1.3 at 1 approver; the ratio at 50 is printed, not judged.
Redis: REDIS_URL when set (every key under the bench's prefix is deleted afterwards), otherwise an embedded one the
bench starts and hands to the server. Every child is stopped on exit, Ctrl-C, SIGTERM and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

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
    run_with_redis,
    serve_bolt,
    signed_post,
    spawn,
    stop,
    wait_listening,
)

if TYPE_CHECKING:
    from bot.consent.model import ConsentRequest
    from bot.store import RedisConnections

ROOT = Path(__file__).resolve().parents[1]
BOT_TOKEN = "xoxb-bench-bot-token"
SIGNING_SECRET = "bench-signing-secret-0123456789"
CHANNEL = "C0BENCH01"
REQUESTER = "U0REQUESTER"
APPROVE = "consent-approve"
APPS = ("minimal", "itdr")
TARGET_RATIO = 1.3
WARMUP_SEQUENTIAL = 50
CONTENDED = 50  # approvers clicking one request at once
TIMEOUT = 30.0
CONSENT_TTL_SECONDS = 259200
REDIS_PREFIX = f"itdr-bench-consent:{uuid.uuid4().hex[:8]}:"
APPROVED_BY = re.compile(r"Approved by <@([A-Z0-9]+)>")


def approver(n: int) -> str:
    return f"U0APPR{n:04d}"


# ----------------
#  children: the apps under test
# ----------------


def serve_minimal(port: int, api_url: str) -> None:
    """A Bolt app whose Approve listener only acks, on the same stack and uvicorn options as `itdr serve`."""

    def register(app: Any) -> None:
        @app.action(APPROVE)
        async def only_ack(ack: Any) -> None:
            await ack()

    serve_bolt(port, api_url, BOT_TOKEN, SIGNING_SECRET, register)


def itdr_environment(api_url: str, redis_url: str, approvers: int) -> dict[str, str]:
    """The settings `itdr serve` runs with (and the parent signs with): one approver per concurrent clicker."""
    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": api_url,
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": REDIS_PREFIX,
        "ITDR_APPROVERS": " ".join(approver(n) for n in range(approvers)),
        "ITDR_REQUIRED_APPROVALS": "1",
        "ITDR_STATE_SECRET": "bench-consent-state-secret",
        "ITDR_CONSENT_TTL_SECONDS": str(CONSENT_TTL_SECONDS),
    }


# ----------------
#  parent: stand-in Slack, consent requests, load client, report
# ----------------


class Slack(StandIn):
    """auth.test, `chat.update` (answered like Slack; its arrival per card is what the itdr clock stops at) and the
    response_url receiver (private refusals). Anything else, or anything nobody waits for, is kept as `stray`."""

    def __init__(self) -> None:
        super().__init__()
        self.updates: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}  # "channel/ts" → waiting click
        self.update_count: Counter[str] = Counter()
        self.update_bytes: list[int] = []
        self.responses: dict[str, asyncio.Future[tuple[float, bytes]]] = {}  # response_url id → waiting click
        self.stray: list[str] = []

    async def handle(self, path: str, body: bytes) -> bytes:
        arrived = time.perf_counter()
        if path.startswith("/response/"):
            rid = path.removeprefix("/response/")
            waiting = self.responses.pop(rid, None)
            if waiting is None or waiting.done():
                self.stray.append(f"response_url post nobody waited for: {body[:120]!r}")
            else:
                waiting.set_result((arrived, body))
            return b'{"ok": true}'
        method = path.removeprefix("/api/").split("?", 1)[0]
        if method == "auth.test":
            return AUTH_TEST
        if method == "chat.update":
            args = json.loads(body) if body.startswith(b"{") else dict(parse_qsl(body.decode()))
            key = f"{args.get('channel')}/{args.get('ts')}"
            self.update_count[key] += 1
            self.update_bytes.append(len(body))
            update = self.updates.pop(key, None)
            if update is None or update.done():
                self.stray.append(f"chat.update nobody waited for: {key} (update {self.update_count[key]})")
            else:
                update.set_result((arrived, args))
            return json.dumps({"ok": True, "channel": args.get("channel"), "ts": args.get("ts"),
                               "text": args.get("text"), "message": {"text": args.get("text"), "ts": args.get("ts"),
                                                                    "bot_id": "B999"}}).encode()
        self.stray.append(f"unexpected Web API call {method}")
        return b'{"ok": true}'


class Requests:
    """Open consent requests as `/itdr consent` records them once their card is posted, and the buttons' values
    signed as the server signs them (the same engine code, settings and Redis prefix as the served app)."""

    def __init__(self, redis_url: str, environment: dict[str, str], since: str | None) -> None:
        from bot.consent.model import Ask
        from bot.consent.service import ConsentService
        from bot.consent.signing import Signer
        from bot.consent.store import ConsentStore
        from bot.settings import load_settings
        from bot.store import RedisConnections
        from catalog import load_catalog

        unset: dict[str, Any] = {name: None for name in ("itdr_client_id", "itdr_client_secret",
                                                          "itdr_client_certificate", "itdr_target_app_id",
                                                          "itdr_state_secret")}
        self.settings = load_settings(**(unset | {name.lower(): value for name, value in environment.items()}))
        self.catalog = load_catalog()
        self.redis: RedisConnections = RedisConnections(redis_url, REDIS_PREFIX)
        self.store = ConsentStore(self.redis.state)
        self.service = ConsentService(self.settings, self.catalog, self.store, None, self.redis.cache,
                                      members_of=self._no_groups, signer=Signer.from_settings(self.settings))
        self.version = self.catalog.latest.version
        # What ConsentService._ask works out from a readiness report: the tenant grants everything of `since`.
        wanted = {item.name for item in self.catalog.items_at(self.version)
                  if self.settings.itdr_cpv_mode or not item.cpv_only}
        had = {item.name for item in self.catalog.items_at(since)} if since else set()
        granted = tuple(name for name in sorted(wanted) if name in had)
        asked = tuple(item.name for item in self.catalog.items_at(self.version)
                      if item.name in wanted and item.name not in granted)
        self.ask = Ask(since=since, asked=asked, granted=granted)
        self.made = 0
        self._message: dict[str, Any] | None = None

    @staticmethod
    async def _no_groups(group: str) -> list[str]:
        return []

    def build(self) -> ConsentRequest:
        """A request as `ConsentService.prepare` makes it, its card posted at a unique ts."""
        from bot.consent import model
        from bot.consent.model import ConsentRequest, TenantRef

        self.made += 1
        now = model.now_utc()
        return ConsentRequest(
            id=model.new_request_id(),
            tenant=TenantRef(id=str(uuid.uuid4()), domain=f"bench{self.made}.onmicrosoft.com",
                             name=f"Bench tenant {self.made}"),
            version=self.version, requester=REQUESTER, channel=CHANNEL,
            message_ts=f"{1_800_000_000 + self.made}.{self.made % 1_000_000:06d}",
            required_approvals=self.settings.itdr_required_approvals, created_at=now,
            expires_at=model.expiry(now, self.settings.itdr_consent_ttl_seconds), ask=self.ask,
        )

    async def open(self, count: int) -> list[ConsentRequest]:
        """`count` new requests, recorded in Redis (concurrently, 32 at a time)."""
        requests = [self.build() for _ in range(count)]
        gate = asyncio.Semaphore(32)

        async def save(request: ConsentRequest) -> None:
            async with gate:
                await self.store.save_new(request)

        await asyncio.gather(*(save(request) for request in requests))
        return requests

    def value(self, request: ConsentRequest) -> str:
        return self.service.button_value(request)

    def message(self, request: ConsentRequest) -> dict[str, Any]:
        """The card as Slack hands it back in a click's `message` (the pending card of a representative request,
        rendered once: every request's card has the same shape and size)."""
        if self._message is None:
            from handlers.cards import render

            text, blocks = render(self.service, request)
            self._message = {"type": "message", "user": "W999", "bot_id": "B999", "text": text, "blocks": blocks}
        return self._message | {"ts": request.message_ts}

    async def aclose(self) -> None:
        await self.redis.aclose()


def click(port: int, slack_port: int, requests: Requests, request: ConsentRequest, user: str,
          rid: str) -> bytes:
    """The raw HTTP request Slack sends when `user` clicks Approve on the request's card, signed now."""
    value = requests.value(request)
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T111"},
        "api_app_id": "A111",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": request.message_ts, "channel_id": CHANNEL,
                      "is_ephemeral": False},
        "trigger_id": f"{time.time():.6f}.{rid}",
        "team": {"id": "T111", "domain": "bench"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": CHANNEL, "name": "onboarding"},
        "message": requests.message(request),
        "state": {"values": {}},
        "response_url": f"http://127.0.0.1:{slack_port}/response/{rid}",
        "actions": [{"action_id": APPROVE, "block_id": "consent-actions-pending", "value": value, "style": "primary",
                     "type": "button", "text": {"type": "plain_text", "text": "Approve", "emoji": True},
                     "action_ts": f"{time.time():.6f}"}],
    }
    return signed_post(port, urlencode({"payload": json.dumps(payload)}).encode(), SIGNING_SECRET)


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    wrong: list[str] = field(default_factory=list)
    acks: list[float] = field(default_factory=list)  # itdr: click → ack, for reference
    approvals: int = 0  # itdr: accepted approvals checked
    refusals: int = 0  # itdr: refusals checked (50 on one request)

    @property
    def updates(self) -> bool:
        return self.name == "itdr"


def check_update(args: dict[str, Any], request: ConsentRequest, user: str) -> str | None:
    """Why this chat.update is not the approved card for `request` approved by `user`, or None."""
    if args.get("channel") != request.channel or args.get("ts") != request.message_ts:
        return f"update for {args.get('channel')}/{args.get('ts')}"
    blocks = json.dumps(args.get("blocks"))
    if f"Approved by <@{user}>" not in blocks or "Consent approved" not in str(args.get("text")):
        return f"card not approved by {user}: {str(args.get('text'))[:80]!r}"
    return None


async def approve(conn: Connection, target: Target, slack: Slack, requests: Requests, request: ConsentRequest,
                  user: str) -> float | None:
    """One Approve click on its own request: seconds from the click to the card update (itdr) or to the ack
    (minimal); None (and a wrong answer recorded) when itdr did not update the card."""
    loop = asyncio.get_running_loop()
    rid = uuid.uuid4().hex
    raw = click(target.port, slack.port, requests, request, user, rid)
    key = f"{request.channel}/{request.message_ts}"
    update: asyncio.Future[tuple[float, dict[str, Any]]] = loop.create_future()
    refusal: asyncio.Future[tuple[float, bytes]] = loop.create_future()
    if target.updates:
        slack.updates[key], slack.responses[rid] = update, refusal
    await conn.ready()
    started, acked, body = await conn.exchange(raw, target.name)
    if body:
        target.wrong.append(f"the ack carried a body: {body[:80]!r}")
    if not target.updates:
        return acked - started
    target.acks.append(acked - started)
    done, _ = await asyncio.wait((update, refusal), timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    slack.responses.pop(rid, None)
    if update not in done:
        slack.updates.pop(key, None)
        why = json.loads(refusal.result()[1]).get("text") if refusal in done else f"nothing within {TIMEOUT:.0f} s"
        target.wrong.append(f"{user} on {request.id}: no card update ({str(why)[:100]})")
        return None
    arrived, args = update.result()
    if problem := check_update(args, request, user):
        target.wrong.append(problem)
    target.approvals += 1
    return arrived - started


async def batch(target: Target, conns: list[Connection], slack: Slack, requests: Requests, count: int,
                idle: list[Target]) -> Tally:
    """`count` measured Approve clicks, `len(conns)` approvers at a time, each on a request of its own."""
    opened = await requests.open(count) if target.updates else [requests.build() for _ in range(count)]
    queue = iter(opened)
    tally = Tally()

    async def worker(n: int, conn: Connection) -> None:
        for request in queue:
            if (seconds := await approve(conn, target, slack, requests, request, approver(n))) is not None:
                tally.samples.append(seconds)

    with metered(tally, target.proc.pid, [other.proc.pid for other in idle]):
        await asyncio.gather(*(worker(n, conn) for n, conn in enumerate(conns)))
    return tally


@dataclass
class Contended:
    """50 approvers on one request: the accepted click → card update, the others → their private refusal."""

    acks: Tally = field(default_factory=Tally)  # minimal
    update: Tally = field(default_factory=Tally)  # itdr, one per round
    refusals: list[float] = field(default_factory=list)  # itdr, 49 per round


async def contended_round(target: Target, conns: list[Connection], slack: Slack, requests: Requests,
                          result: Contended, idle: list[Target]) -> None:
    """One request, `len(conns)` different approvers clicking Approve on it at once."""
    loop = asyncio.get_running_loop()
    request = (await requests.open(1))[0] if target.updates else requests.build()
    users = [approver(n) for n in range(len(conns))]
    rids = [uuid.uuid4().hex for _ in conns]
    raws = [click(target.port, slack.port, requests, request, user, rid) for user, rid in zip(users, rids,
                                                                                            strict=True)]
    key = f"{request.channel}/{request.message_ts}"
    update: asyncio.Future[tuple[float, dict[str, Any]]] = loop.create_future()
    refusals: dict[str, asyncio.Future[tuple[float, bytes]]] = {user: loop.create_future() for user in users}
    if target.updates:
        slack.updates[key] = update
        slack.responses.update({rid: refusals[user] for user, rid in zip(users, rids, strict=True)})
    for conn in conns:
        await conn.ready()
    tally = result.update if target.updates else result.acks
    with metered(tally, target.proc.pid, [other.proc.pid for other in idle]):
        exchanged = await asyncio.gather(*(conn.exchange(raw, target.name) for conn, raw in zip(conns, raws,
                                                                                                 strict=True)))
        if target.updates:
            arrived, args = await asyncio.wait_for(update, TIMEOUT)
    started = dict(zip(users, (started for started, _, _ in exchanged), strict=True))
    if any(body for _, _, body in exchanged):
        target.wrong.append("an ack carried a body")
    if not target.updates:
        tally.samples += [acked - began for began, acked, _ in exchanged]
        return
    winner = (match.group(1) if (match := APPROVED_BY.search(json.dumps(args.get("blocks")))) else None)
    if winner not in refusals:
        target.wrong.append(f"the update names no clicker as approver: {str(args.get('text'))[:80]!r}")
        return
    if problem := check_update(args, request, winner):
        target.wrong.append(problem)
    target.approvals += 1
    tally.samples.append(arrived - started[winner])
    losers = [user for user in users if user != winner]
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(refusals[user] for user in losers)), TIMEOUT)
    except TimeoutError:
        target.wrong.append(f"{sum(not refusals[u].done() for u in losers)} losing clicks got no refusal")
        return
    for user, (at, body) in zip(losers, answers, strict=True):
        text = str(json.loads(body).get("text"))
        if f"already approved by <@{winner}>" not in text:
            target.wrong.append(f"{user}'s refusal: {text[:100]!r}")
        result.refusals.append(at - started[user])
        target.refusals += 1
    await asyncio.sleep(0.2)  # a second update, or a refusal for the winner, would land meanwhile
    if not refusals[winner].done():
        slack.responses.pop(rids[users.index(winner)], None)
    else:
        target.wrong.append(f"the winner {winner} was also refused")
    if slack.update_count[key] != 1:
        target.wrong.append(f"{slack.update_count[key]} card updates for one request")


async def open_connections(target: Target, count: int) -> list[Connection]:
    return [await Connection.open(target.port) for _ in range(count)]


async def close_connections(conns: list[Connection]) -> None:
    for conn in conns:
        await conn.close()


async def measure_level(targets: dict[str, Target], slack: Slack, requests: Requests, concurrency: int,
                        clicks: int, rounds: int, first: bool) -> dict[str, Tally]:
    conns = {name: await open_connections(target, concurrency) for name, target in targets.items()}
    tallies = {name: Tally() for name in targets}
    try:
        for name, target in targets.items():  # warm-up, not counted
            if first:
                await batch(target, conns[name][:1], slack, requests, WARMUP_SEQUENTIAL, [])
            await batch(target, conns[name], slack, requests, 2 * concurrency, [])
            target.acks.clear()
        per_round = max(1, clicks // rounds)
        for r in range(rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for name in order:
                idle = [t for other, t in targets.items() if other != name]
                tallies[name].add(await batch(targets[name], conns[name], slack, requests, per_round, idle))
    finally:
        for level in conns.values():
            await close_connections(level)
    return tallies


async def measure_contended(targets: dict[str, Target], slack: Slack, requests: Requests,
                            rounds: int) -> dict[str, Contended]:
    conns = {name: await open_connections(target, CONTENDED) for name, target in targets.items()}
    results = {name: Contended() for name in targets}
    try:
        for name, target in targets.items():  # warm-up round, not counted
            await contended_round(target, conns[name], slack, requests, Contended(), [])
        for r in range(rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for name in order:
                idle = [t for other, t in targets.items() if other != name]
                await contended_round(targets[name], conns[name], slack, requests, results[name], idle)
    finally:
        for level in conns.values():
            await close_connections(level)
    return results


def row(approvers: int, name: str, samples: list[float], what: str) -> str:
    if not samples:
        return f"{approvers:>9} {name:<13} {'-':>8} {'-':>8}   {what} (no samples)"
    return f"{approvers:>9} {name:<13} {statistics.median(samples) * 1000:>8.2f} {pct(samples, 0.99):>8.2f}   {what}"


def cpu_line(label: str, tallies: dict[str, Tally], clicks: dict[str, int]) -> str:
    per = {name: (tallies[name].server_cpu / clicks[name] * 1000, tallies[name].client_cpu / clicks[name] * 1000)
           for name in APPS}
    return (f"{label}: app minimal {per['minimal'][0]:.2f}, itdr {per['itdr'][0]:.2f} "
            f"({per['itdr'][0] / per['minimal'][0]:.2f}x); load client and stand-in Slack "
            f"{per['minimal'][1]:.2f} / {per['itdr'][1]:.2f}")


def spawn_itdr(environment: dict[str, str]) -> Target:
    port = free_port()
    env = {k: v for k, v in child_env(ROOT).items() if not k.startswith(("ITDR_", "REDIS_"))} | environment
    proc = spawn([sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                 cwd=ROOT, env=env)
    return Target("itdr", port, proc)


def spawn_minimal(api_url: str) -> Target:
    port = free_port()
    proc = spawn([sys.executable, __file__, "--child=minimal", f"--port={port}", f"--api-url={api_url}"],
                 cwd=ROOT, env=child_env(ROOT))
    return Target("minimal", port, proc)


async def run(args: argparse.Namespace, redis_url: str) -> int:
    slack = Slack()
    await slack.start()
    targets: dict[str, Target] = {}
    requests: Requests | None = None
    try:
        environment = itdr_environment(slack.api_url, redis_url, max(*args.concurrency, CONTENDED))
        requests = Requests(redis_url, environment, args.since)
        targets["minimal"] = spawn_minimal(slack.api_url)
        targets["itdr"] = spawn_itdr(environment)
        for target in targets.values():
            await wait_listening(target.port, target.proc)
        sample = requests.build()
        card_bytes = len(json.dumps(requests.message(sample)["blocks"]))
        print(f"Approve click → card update; clicks per level and app: {args.clicks} in {args.rounds} rounds; "
              f"{CONTENDED} approvers on one request: {args.contended_rounds} rounds")
        print(f"requests ask {len(requests.ask.asked)} items of {requests.version} "
              f"({'first onboarding' if args.since is None else 'tenant at ' + args.since}; card blocks "
              f"{card_bytes} bytes); redis: {redis_url.split('@')[-1]}; cpus: {os.cpu_count()}; "
              f"load average: {os.getloadavg()[0]:.2f}")
        print(f"target: itdr p50 <= {TARGET_RATIO}x minimal p50 at 1 approver")
        print(f"{'approvers':>9} {'app':<13} {'p50 ms':>8} {'p99 ms':>8}   measured")
        cpu_lines = []
        for n, concurrency in enumerate(args.concurrency):
            tallies = await measure_level(targets, slack, requests, concurrency, args.clicks, args.rounds, n == 0)
            print(row(concurrency, "minimal", tallies["minimal"].samples, "click → ack"))
            print(row(concurrency, "itdr", tallies["itdr"].samples, "click → chat.update of the card"))
            print(row(concurrency, "itdr ack", targets["itdr"].acks, "click → ack (reference)"))
            ratio = statistics.median(tallies["itdr"].samples) / statistics.median(tallies["minimal"].samples)
            verdict = (f"target <= {TARGET_RATIO}x: {'ok' if ratio <= TARGET_RATIO else 'MISSED'}"
                       if concurrency == 1 else "(no target)")
            print(f"{concurrency:>9} {'ratio':<13} {ratio:>7.2f}x {'':>8}   itdr p50 / minimal p50 {verdict}")
            targets["itdr"].acks.clear()
            cpu_lines.append(cpu_line(f"{concurrency:>3} approvers", tallies,
                                      {name: len(tallies[name].samples) for name in APPS}))
        if args.contended_rounds:
            results = await measure_contended(targets, slack, requests, args.contended_rounds)
            print(f"{CONTENDED} approvers on ONE request, {args.contended_rounds} rounds "
                  f"(each: 1 card update, {CONTENDED - 1} private refusals):")
            print(row(CONTENDED, "minimal", results["minimal"].acks.samples, "click → ack"))
            print(row(CONTENDED, "itdr update", results["itdr"].update.samples,
                      "accepted click → chat.update of the card (1 per round)"))
            print(row(CONTENDED, "itdr refusal", results["itdr"].refusals,
                      f"refused click → its response_url refusal ({CONTENDED - 1} per round)"))
            if results["itdr"].update.samples:
                ratio = (statistics.median(results["itdr"].update.samples)
                         / statistics.median(results["minimal"].acks.samples))
                print(f"{CONTENDED:>9} {'ratio':<13} {ratio:>7.2f}x {'':>8}   itdr update p50 / minimal p50")
            per_round = {name: CONTENDED * args.contended_rounds for name in APPS}
            cpu_lines.append(cpu_line(f"{CONTENDED} on one", {"minimal": results["minimal"].acks,
                                                                "itdr": results["itdr"].update}, per_round))
        print("cpu ms per click (app process's event-loop thread; this process):")
        for line in cpu_lines:
            print(f"  {line}")
        itdr = targets["itdr"]
        wrong = itdr.wrong + targets["minimal"].wrong + slack.stray
        duplicates = sum(1 for count in slack.update_count.values() if count > 1)
        if duplicates:
            wrong.append(f"{duplicates} requests got more than one card update")
        print(f"checked (warm-up included): {itdr.approvals} approvals, each one card update approved by its clicker; "
              f"{itdr.refusals} refusals 'already approved by <@winner>'; chat.update body "
              f"{statistics.median(slack.update_bytes or [0]):.0f} bytes; wrong: {len(wrong)}; "
              f"load average: {os.getloadavg()[0]:.2f}")
        for problem in wrong[:5]:
            print(f"  wrong: {problem}")
        return 1 if wrong else 0
    finally:
        stop([target.proc for target in targets.values()])
        await slack.aclose()
        if requests is not None:
            await requests.aclose()
        await forget_keys(redis_url, REDIS_PREFIX)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=1000, help="measured clicks per level and app")
    parser.add_argument("--rounds", type=int, default=5, help="turns per app and level (apps alternate)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50], help="concurrent approvers")
    parser.add_argument("--contended-rounds", type=int, default=20,
                        help=f"rounds of {CONTENDED} approvers on one request (0: skip)")
    parser.add_argument("--since", default="none",
                        help="the revision the tenants already grant (none: a first onboarding, the biggest card)")
    parser.add_argument("--child", choices=["minimal"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_minimal(args.port, args.api_url)
        return 0
    if args.clicks < args.rounds or min(args.concurrency) < 1 or args.contended_rounds < 0:
        parser.error("--clicks must be at least --rounds, every --concurrency at least 1")
    sys.path.insert(0, str(ROOT))  # the parent records requests with this checkout's engine
    from catalog import UnknownVersion, load_catalog

    args.since = None if args.since.lower() == "none" else args.since
    try:
        args.since = args.since and load_catalog().revision(args.since).version
    except UnknownVersion as exc:
        parser.error(str(exc))
    return run_with_redis(lambda redis_url: run(args, redis_url))


if __name__ == "__main__":
    sys.exit(main())
