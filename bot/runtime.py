"""`Runtime`: what one process needs, opened in one place and closed in one place.

Settings, the catalog, Redis (cache, state, an embedded server when `REDIS_URL` is unset), one keep-alive HTTP
session for Slack, the Slack Web API client and the readiness service. Every entry point (`itdr serve`, `socket`,
`console`, `check`, the worker) opens a Runtime and hands it down; nothing else opens or closes these.

    async with Runtime.open(settings, Mode.HTTP) as runtime:
        app = build_app(runtime)
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import BackgroundTasks
from bot.consent.service import ConsentService
from bot.consent.signing import Signer
from bot.consent.store import ConsentStore
from bot.drift.service import DriftService
from bot.drift.store import DriftStore
from bot.drift.sweep import queue_for
from bot.readiness.fix_service import FixService
from bot.readiness.limits import CheckLimits
from bot.readiness.service import ReadinessService
from bot.settings import Mode, Settings
from bot.store import Cache, EmbeddedRedis, Epoch, RedisConnections, State, StateUnavailable
from catalog import Catalog, load_catalog

log = logging.getLogger(__name__)

#: Modes whose state must outlive the process: an embedded Redis there is worth a warning.
_LONG_RUNNING = (Mode.HTTP, Mode.SOCKET, Mode.WORKER)
#: How long a stopping process lets work under way (a check someone is waiting for) finish.
BACKGROUND_DRAIN_SECONDS = 10.0


@dataclass
class Runtime:
    settings: Settings
    mode: Mode
    catalog: Catalog
    redis: RedisConnections
    http: aiohttp.ClientSession  # keep-alive connections to Slack (Web API and response_url posts)
    slack: AsyncWebClient
    readiness: ReadinessService | None  # None: the check is not configured (it says how to set it up)
    consent: ConsentService
    drift: DriftService
    background: BackgroundTasks  # listeners' work after their ack, drained at close
    epoch: Epoch | None = None  # the state's epoch at start (None: Redis was down then)

    @property
    def cache(self) -> Cache:
        return self.redis.cache

    @property
    def state(self) -> State:
        return self.redis.state

    @functools.cached_property
    def fixes(self) -> FixService:
        """Fix plans posted in Slack and their scheduled re-checks (SAQ jobs on the workers' queue)."""
        from bot.readiness.fix_service import FixService

        return FixService(self.readiness, self.state, queue_for(self.redis, self.settings),
                          job_timeout=self.settings.itdr_job_timeout_seconds)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        mode: Mode,
        *,
        catalog: Catalog | None = None,
        slack_token: str | None = None,
        readiness: Callable[[Settings, Catalog, RedisConnections], ReadinessService | None] | None = None,
    ) -> AsyncIterator[Runtime]:
        """Open everything `mode` needs; on exit close it all, in reverse order, whatever happened.

        `slack_token` overrides SLACK_BOT_TOKEN (the console talks to its loopback Slack); `readiness` overrides
        how the readiness service is built (tests inject fakes).
        """
        async with contextlib.AsyncExitStack() as stack:
            catalog = catalog or load_catalog()  # validated at start, never on a request's clock
            url = settings.redis_dsn
            if url is None:
                embedded = stack.enter_context(EmbeddedRedis())
                url = embedded.url
                if mode in _LONG_RUNNING:
                    log.warning("REDIS_URL is not set: using an embedded Redis, so approvals, watched tenants and "
                                "other state will not survive a restart. Set REDIS_URL for production.")
            redis = RedisConnections(url, settings.redis_prefix)
            stack.push_async_callback(redis.aclose)
            http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
            stack.push_async_callback(http.close)
            build = readiness or _build_readiness
            service = build(settings, catalog, redis)
            if service is not None:
                stack.push_async_callback(service.aclose)
            slack = slack_client(settings, http, token=slack_token)
            consent = ConsentService(settings, catalog, ConsentStore(redis.state), service, redis.cache,
                                     members_of=lambda group: _group_members(slack, group),
                                     signer=Signer.from_settings(settings))
            if mode in _LONG_RUNNING and settings.redis_dsn is not None:  # the embedded one was warned about
                await _warn_without_persistence(redis.state)
                await _warn_on_eviction(redis.state)
            epoch = await _epoch(redis.state)
            queue = functools.cache(lambda: queue_for(redis, settings))  # made on first use, one per process
            drift = DriftService(catalog, DriftStore(redis.state), service, queue=queue)
            background = BackgroundTasks()
            stack.push_async_callback(background.drain, BACKGROUND_DRAIN_SECONDS)  # first to run at close
            yield cls(settings=settings, mode=mode, catalog=catalog, redis=redis, http=http, slack=slack,
                      readiness=service, consent=consent, drift=drift, background=background, epoch=epoch)


    async def state_reset(self) -> Epoch | None:
        """The new epoch when Redis lost its data since this process started (for an ops alert); else None.
        Raises StateUnavailable when Redis cannot be asked."""
        return await self.state.reset_since(self.epoch)


async def _epoch(state: State) -> Epoch | None:
    try:
        return await state.epoch()
    except StateUnavailable:
        return None  # fails open at start: the listeners say what they cannot do


async def _warn_on_eviction(state: State) -> None:
    policy = await state.eviction_policy()
    if policy is not None and policy != "noeviction":
        log.warning("Redis maxmemory-policy is %s, not noeviction: under memory pressure it evicts approvals, the "
                    "audit trail and watched tenants. Set maxmemory-policy noeviction.", policy)


async def _group_members(slack: AsyncWebClient, group: str) -> list[str]:
    """A user group's members; none when Slack will not list them (fails closed: nobody approves through it)."""
    try:
        response = await slack.usergroups_users_list(usergroup=group)
    except SlackApiError as exc:
        log.warning("could not list the members of approver group %s: %s", group, exc.response.get("error"))
        return []
    return [str(user) for user in response.get("users") or []]


async def _warn_without_persistence(state: State) -> None:
    persistence = await state.persistence()
    if persistence is not None and not any(persistence):
        log.warning("Redis keeps nothing on disk (neither AOF nor RDB snapshots are on): approvals, the audit trail "
                    "and watched tenants are lost if it restarts. Turn on appendonly or save in its configuration.")


def _build_readiness(settings: Settings, catalog: Catalog, redis: RedisConnections) -> ReadinessService | None:
    if not settings.readiness_configured:
        return None
    limits = CheckLimits(redis.cache.client, settings.redis_prefix,
                         exchange_concurrency=settings.itdr_exchange_concurrency)
    return ReadinessService(settings, catalog, cache=redis.cache, limits=limits)


def slack_client(settings: Settings, session: aiohttp.ClientSession, *, token: str | None = None) -> AsyncWebClient:
    """Web API client for SLACK_API_URL over `session`; retries connection errors and 429s (honouring
    Retry-After)."""
    return AsyncWebClient(
        token=token or settings.secret("slack_bot_token") or None,
        base_url=settings.slack_api_url,
        session=session,
        timeout=10,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        ],
    )
