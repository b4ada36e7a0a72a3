"""`GET /readyz`: ready only when Redis answers and Slack accepts the bot token. Slack's answer is kept for a while
(a probe every few seconds must not become an `auth.test` every few seconds); Redis is asked every time."""

from __future__ import annotations

import asyncio
import time

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError

from bot.runtime import Runtime

#: How long Slack's verdict on the token is kept: a good one for 5 minutes, a bad or unknown one for 30 s.
TOKEN_VALID_SECONDS = 300.0
TOKEN_INVALID_SECONDS = 30.0
REDIS_PROBE_SECONDS = 2.0


class ReadinessProbe:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._slack: tuple[float, str | None] | None = None  # (valid until, reason it is not ready or None)
        self._lock = asyncio.Lock()

    async def check(self) -> tuple[bool, str | None]:
        """(ready, the reason when not)."""
        try:
            await asyncio.wait_for(self.runtime.state.client.ping(), REDIS_PROBE_SECONDS)
        except (RedisError, OSError, TimeoutError) as exc:
            return False, f"Redis does not answer ({type(exc).__name__})"
        reason = await self._slack_reason()
        return reason is None, reason

    async def _slack_reason(self) -> str | None:
        async with self._lock:
            if self._slack is not None and time.monotonic() < self._slack[0]:
                return self._slack[1]
            reason: str | None = None
            try:
                await self.runtime.slack.auth_test()
            except SlackApiError as exc:
                reason = f"Slack rejects the bot token ({exc.response.get('error')})"
            except Exception as exc:  # network: not ready, asked again soon
                reason = f"Slack is unreachable ({type(exc).__name__})"
            ttl = TOKEN_VALID_SECONDS if reason is None else TOKEN_INVALID_SECONDS
            self._slack = (time.monotonic() + ttl, reason)
            return reason
