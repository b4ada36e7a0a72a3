"""At most one message a second per Slack channel (Slack's limit for posting), across every worker process: a
Redis key per channel that lives for a second, taken before each post."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

INTERVAL_MS = 1000


class ChannelPacer:
    def __init__(self, client: aioredis.Redis, prefix: str, *, interval_ms: int = INTERVAL_MS) -> None:
        self.client = client
        self.prefix = prefix
        self.interval_ms = interval_ms

    async def wait(self, channel: str) -> None:
        """Return when this process may post in `channel` (and hold the channel for the next interval)."""
        key = self._key(channel)
        while not await self.client.set(key, b"1", nx=True, px=self.interval_ms):
            wait_ms = await self.client.pttl(key)
            await asyncio.sleep(max(wait_ms, 5) / 1000)

    async def held_for(self, channel: str) -> float:
        """Seconds before anyone may post in `channel` (0 when it is free)."""
        return max(0, int(await self.client.pttl(self._key(channel)))) / 1000

    async def hold(self, channel: str, seconds: float) -> None:
        """Slack said to wait (429 Retry-After): nobody posts in `channel` before then."""
        await self.client.set(self._key(channel), b"1", px=max(1, int(seconds * 1000)))

    def _key(self, channel: str) -> str:
        return f"{self.prefix}pace:{channel}"
