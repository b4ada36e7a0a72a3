"""Limits on Microsoft calls held in Redis, so they hold across every process and machine that checks tenants.

* Exchange: at most `exchange_concurrency` checks at once run their cmdlets (EXO's REST limits are not published
  and degrade for many tenants at once, so the bot stays well below).
* Conditional Access: at most one read per second per tenant, Graph's own limit for that API (which answers 429
  without a Retry-After beyond it).

They fail open: with Redis down a check runs unthrottled rather than not at all (Microsoft's 429s, honoured by the
HTTP layer, remain the backstop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
    return 1
end
return 0
"""
LEASE_SECONDS = 120  # a lease outlives no holder by more than this, should a process die holding it
CA_INTERVAL_MS = 1000


class CheckLimits:
    def __init__(self, client: aioredis.Redis, prefix: str, *, exchange_concurrency: int) -> None:
        self.client = client
        self.prefix = prefix
        self.exchange_concurrency = exchange_concurrency
        self._acquire = client.register_script(_ACQUIRE)

    @contextlib.asynccontextmanager
    async def exchange(self) -> AsyncIterator[None]:
        """Hold one of the fleet-wide Exchange slots while the cmdlets run."""
        key = f"{self.prefix}limit:exchange"
        lease = secrets.token_hex(8)
        held = False
        delay = 0.02
        while True:
            try:
                now = time.time()
                held = bool(await self._acquire(keys=[key], args=[now, now + LEASE_SECONDS,
                                                                  self.exchange_concurrency, lease]))
            except (RedisError, OSError) as exc:
                log.warning("Exchange limit unavailable (%s): running without it", type(exc).__name__)
                break
            if held:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)
        try:
            yield
        finally:
            if held:
                with contextlib.suppress(RedisError, OSError):
                    await self.client.zrem(key, lease)

    async def conditional_access(self, tenant_id: str) -> None:
        """Wait until this tenant's Conditional Access policies may be read (one read per second, fleet-wide)."""
        key = f"{self.prefix}limit:ca:{tenant_id}"
        while True:
            try:
                if await self.client.set(key, b"1", nx=True, px=CA_INTERVAL_MS):
                    return
                wait_ms = await self.client.pttl(key)
            except (RedisError, OSError) as exc:
                log.warning("Conditional Access limit unavailable (%s): reading without it", type(exc).__name__)
                return
            await asyncio.sleep(max(wait_ms, 10) / 1000)
