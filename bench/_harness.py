"""What the Slack benches share: HTTP/1.1 over raw asyncio streams (a keep-alive load client and small servers),
signed Slack requests, the apps under test as child processes (own session, always stopped), CPU accounting and
percentiles.

Deliberately free of `bot`, `catalog` and `handlers` imports: `slack_roundtrip.py --root` serves another checkout's
code with these helpers, so nothing here may pull in this checkout's app.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ----------------
#  HTTP/1.1 over asyncio streams (load client, stand-in Slack and the null server share it)
# ----------------

Message = tuple[bytes, dict[bytes, bytes], bytes]  # start line, lower-cased headers, body


async def read_message(reader: asyncio.StreamReader) -> Message | None:
    """(start line, lower-cased headers, body) of one request or response; None when the peer closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    start, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
            pass
        return start, headers, bytes(body)
    length = int(headers.get(b"content-length", b"0"))
    return start, headers, (await reader.readexactly(length) if length else b"")


Handler = Callable[[str, bytes], Awaitable[bytes]]


def http_server(handle: Handler) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A keep-alive HTTP/1.1 server callback: `handle(path, body)` returns a JSON body sent with 200."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (message := await read_message(reader)) is not None:
                start, _, body = message
                payload = await handle(start.split(b" ", 2)[1].decode(), body)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # the loop is shutting down with the connection open: nothing to report
            pass
        finally:
            writer.close()

    return on_connection


class StandIn:
    """The parent's stand-in Slack: a keep-alive HTTP server on a free loopback port answering with `handle`."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(http_server(self.handle), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def handle(self, path: str, body: bytes) -> bytes:
        raise NotImplementedError


AUTH_TEST = b'{"ok": true, "team_id": "T111", "user_id": "W999", "bot_id": "B999"}'


def signed_post(port: int, body: bytes, secret: str, content_type: bytes = b"application/x-www-form-urlencoded",
                path: bytes = b"/slack/events") -> bytes:
    """The raw HTTP request Slack sends with `body`, signed now with `secret`."""
    ts = str(int(time.time())).encode()
    signature = hmac.new(secret.encode(), b"v0:" + ts + b":" + body, hashlib.sha256).hexdigest().encode()
    return (
        b"POST %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: %s\r\n"
        b"content-length: %d\r\nx-slack-request-timestamp: %s\r\nx-slack-signature: v0=%s\r\n\r\n%s"
        % (path, port, content_type, len(body), ts, signature, body)
    )


class Connection:
    """One keep-alive connection of the load client.

    uvicorn closes a keep-alive connection after 5 s without a request; one idle longer than `MAX_IDLE` (the other
    app's turn) is opened again before the clock starts."""

    MAX_IDLE = 4.0

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    @classmethod
    async def open(cls, port: int) -> Connection:
        connection = cls(port)
        await connection.connect()
        return connection

    async def connect(self) -> None:
        await self.close()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.last_used = time.monotonic()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
            self.reader = self.writer = None

    async def ready(self) -> None:
        """Reopen the connection when the server may have closed it (call before starting a clock)."""
        if self.reader is None or self.reader.at_eof() or time.monotonic() - self.last_used > self.MAX_IDLE:
            await self.connect()

    async def exchange(self, raw: bytes, name: str) -> tuple[float, float, bytes]:
        """Send one request on the (ready) connection: (perf_counter when written, when the response was read,
        its body). Raises RuntimeError for a closed connection or a status other than 200."""
        assert self.reader is not None and self.writer is not None
        started = time.perf_counter()
        self.writer.write(raw)
        message = await read_message(self.reader)
        done = time.perf_counter()
        self.last_used = time.monotonic()
        if message is None:
            raise RuntimeError(f"{name} closed the connection")
        start, _, body = message
        if start[9:12] != b"200":
            raise RuntimeError(f"{name} answered {start.decode(errors='replace')}: {body[:200]!r}")
        return started, done, body


# ----------------
#  children: the apps under test
# ----------------


def die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


UVICORN_OPTIONS: dict[str, Any] = {  # what `itdr serve` passes to uvicorn.run (bot/server.py)
    "log_level": "warning", "access_log": False, "lifespan": "on", "proxy_headers": True,
    "forwarded_allow_ips": "*", "log_config": None,
}


def serve_bolt(port: int, api_url: str, token: str, signing_secret: str,
               register: Callable[[Any], None]) -> None:
    """A bare Bolt AsyncApp (listeners from `register(app)`) on the same Starlette + uvicorn stack and uvicorn
    options as `itdr serve`: the baseline the benches compare itdr with."""
    import uvicorn
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient
    from starlette.applications import Starlette
    from starlette.routing import Route

    app = AsyncApp(client=AsyncWebClient(token=token, base_url=api_url), signing_secret=signing_secret)
    register(app)
    handler = AsyncSlackRequestHandler(app)

    async def events(request: Any) -> Any:
        return await handler.handle(request)

    asgi = Starlette(routes=[Route("/slack/events", events, methods=["POST"])])
    uvicorn.run(asgi, host="127.0.0.1", port=port, **UVICORN_OPTIONS)


def serve_null(port: int) -> None:
    """The harness floor: an empty 200 for every request."""

    async def nothing(path: str, body: bytes) -> bytes:
        return b""

    async def main() -> None:
        server = await asyncio.start_server(http_server(nothing), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """A child in its own session, so Ctrl-C reaches only the bench, which stops the children itself; the
    parent-death signal stops them if the bench is killed outright. `popen`: more Popen arguments (stdin, stdout,
    stderr)."""
    return subprocess.Popen(list(argv), env=dict(env), cwd=cwd, start_new_session=True, preexec_fn=die_with_parent,
                            **popen)


def child_env(root: Path, **extra: str) -> dict[str, str]:
    """The bench's environment without any SLACK_ setting of the caller's, with `root` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env["PYTHONPATH"] = str(root)
    env.update(extra)
    return env


async def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"child {proc.args!r} exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every child still running, then SIGKILL any that has not stopped within 10 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def forget_keys(redis_url: str | None, prefix: str) -> None:
    """Delete every key under `prefix` (a shared Redis is left as found; an embedded one dies anyway)."""
    if not redis_url:
        return
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start:start + 1000])
    finally:
        await client.aclose()


def run_main(run: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """asyncio.run(run()) with SIGTERM cancelling it like Ctrl-C: `run` stops its children and cleans up in its
    `finally`, then this says so."""

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run()

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: children stopped", file=sys.stderr)
        return 130



def run_with_redis(run: Callable[[str], Coroutine[Any, Any, int]]) -> int:
    """`run_main(run(url))` on REDIS_URL, else on an embedded server started here (from the main thread: it stops
    with this process however it ends)."""
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        return run_main(lambda: run(redis_url))  # Ctrl-C or SIGTERM: run() stops the children, deletes keys
    from bot.store import EmbeddedRedis

    embedded = EmbeddedRedis()
    try:
        return run_main(lambda: run(embedded.url))
    finally:
        embedded.close()

# ----------------
#  figures
# ----------------


def cpu_seconds(pid: int) -> float:
    """CPU time of a process's main thread (where its event loop runs), in nanoseconds from /proc/PID/schedstat;
    utime + stime in clock ticks (10 ms) where that file is missing."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Tally:
    samples: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    idle_cpu: float = 0.0  # what the other app used meanwhile

    def add(self, other: Tally) -> None:
        self.samples += other.samples
        self.server_cpu += other.server_cpu
        self.client_cpu += other.client_cpu
        self.idle_cpu += other.idle_cpu

    def per_request_ms(self, what: str) -> float:
        return getattr(self, what) / len(self.samples) * 1000 if self.samples else float("nan")


@contextlib.contextmanager
def metered(tally: Tally, pid: int, idle: Sequence[int]) -> Any:
    """Charge the CPU used inside the block to `tally`: the app `pid`, this process (the load client and stand-in
    Slack) and the `idle` apps. The garbage collector is paused meanwhile."""
    import gc

    idle_before = sum(cpu_seconds(other) for other in idle)
    server_before, client_before = cpu_seconds(pid), time.process_time()
    gc.disable()
    try:
        yield tally
    finally:
        gc.enable()
    tally.server_cpu += cpu_seconds(pid) - server_before
    tally.client_cpu += time.process_time() - client_before
    tally.idle_cpu += sum(cpu_seconds(other) for other in idle) - idle_before
    gc.collect()


def pct(samples: Sequence[float], q: float) -> float:
    """The q-quantile of `samples` (seconds) in milliseconds (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000
