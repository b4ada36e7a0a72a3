"""Fleet-wide limits on Microsoft calls, held in a real Redis: they hold across processes (here: clients)."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from bot.readiness.limits import CheckLimits


async def test_exchange_slots_hold_across_limiters(redis_url: str, redis_prefix: str) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(3)]  # three "processes"
    limiters = [CheckLimits(client, redis_prefix, exchange_concurrency=2) for client in clients]
    running = 0
    peak = 0

    async def cmdlets(limiter: CheckLimits) -> None:
        nonlocal running, peak
        async with limiter.exchange():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1

    try:
        await asyncio.gather(*(cmdlets(limiters[n % 3]) for n in range(12)))
    finally:
        for client in clients:
            await client.aclose()
    assert peak == 2


async def test_conditional_access_is_read_once_a_second_per_tenant(redis_url: str, redis_prefix: str) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    limiters = [CheckLimits(client, redis_prefix, exchange_concurrency=1) for client in clients]
    times: list[float] = []

    async def read(limiter: CheckLimits, tenant: str) -> None:
        await limiter.conditional_access(tenant)
        times.append(time.monotonic())

    try:
        started = time.monotonic()
        await asyncio.gather(*(read(limiters[n % 2], "tenant-a") for n in range(3)))
        assert times[-1] - started >= 1.9, "three reads of one tenant take two intervals"
        times.clear()
        started = time.monotonic()
        await asyncio.gather(*(read(limiters[0], f"tenant-{n}") for n in range(5)))
        assert times[-1] - started < 0.5, "other tenants do not wait for each other"
    finally:
        for client in clients:
            await client.aclose()


async def test_limits_fail_open_without_redis() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = CheckLimits(client, "x:", exchange_concurrency=1)
    try:
        async with limiter.exchange():
            pass
        await limiter.conditional_access("tenant")
    finally:
        await client.aclose()
