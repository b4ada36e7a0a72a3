"""The readiness check end to end: validate the tenant, get tokens, collect, evaluate, cache."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from bot.microsoft import MicrosoftClients
from bot.microsoft.errors import (
    AppNotInTenant,
    BadClientSecret,
    ConfigurationError,
    MicrosoftError,
    MissingServicePrincipal,
    TenantNotFound,
    TokenError,
)
from bot.microsoft.http import track_round_trips
from bot.microsoft.tenant import TenantRef, parse_tenant
from bot.microsoft.tokens import Resource
from bot.readiness.collect import Collector, JsonCache, WaveCounter
from bot.readiness.evaluate import Remedies, evaluate
from bot.readiness.model import Reading, Report, TenantInfo, TenantSnapshot
from bot.settings import Settings
from catalog import Catalog

log = logging.getLogger(__name__)


class StoreCache:
    """JSON values in the bot's Redis store. Never raises: a cache fault only costs Microsoft round trips."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def get_many_json(self, keys: list[str]) -> list[Any]:
        try:
            raws = await self.store.get_values(keys)
            return [None if raw is None else json.loads(raw) for raw in raws]
        except (RedisError, ValueError) as exc:
            log.warning("readiness cache unavailable, checking live: %s", type(exc).__name__)
            return [None] * len(keys)

    async def get_json(self, key: str) -> Any:
        return (await self.get_many_json([key]))[0]

    async def set_json(self, key: str, value: Any, ttl: int) -> None:
        try:
            await self.store.set_value(key, json.dumps(value, separators=(",", ":")), ttl)
        except RedisError as exc:
            log.warning("readiness cache write failed: %s", type(exc).__name__)


@dataclass
class CheckRequest:
    tenant: TenantRef
    version: str
    fresh: bool = False


class ReadinessService:
    """One per process: shares the httpx client, msal apps and caches across every check."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        cache: JsonCache | None = None,
        clients: MicrosoftClients | None = None,
        priority: str | None = "high",
    ) -> None:
        if not settings.itdr_target_app_id and not settings.itdr_client_id:
            raise ConfigurationError("Set ITDR_TARGET_APP_ID (or ITDR_CLIENT_ID when the bot runs as the ITDR app).")
        self.settings = settings
        self.catalog = catalog
        self.cache = cache
        self.clients = clients or MicrosoftClients(settings)
        self.tokens = self.clients.tokens
        self._token_failed: set[str] = set()  # tenants whose last token request was refused
        self.target_app_id = (settings.itdr_target_app_id or settings.itdr_client_id or "").lower()
        # When the bot signs in as the ITDR app itself, "app not in tenant" is the answer, not a fault.
        self.self_check = self.target_app_id == (settings.itdr_client_id or "").lower()
        self.remedies = Remedies(settings.authority_host, self.target_app_id)
        self.collector = Collector(
            catalog,
            lambda tenant: self.clients.graph(tenant, priority=priority),
            self.clients.exchange,
            self.target_app_id,
            cache=cache,
            cpv_mode=settings.itdr_cpv_mode,
            cache_scope=settings.graph_url.split("://", 1)[-1],
        )

    def request(self, tenant: str, version: str | None = None, *, fresh: bool = False) -> CheckRequest:
        """Validate user input before anything reaches a URL: raises InvalidTenant / UnknownVersion."""
        revision = self.catalog.revision(version) if version else self.catalog.latest
        return CheckRequest(parse_tenant(tenant), revision.version, fresh)

    def _report_key(self, request: CheckRequest) -> str:
        return f"check:{self.settings.graph_url.split('://', 1)[-1]}:{request.tenant.value}:{request.version}"

    async def check(self, tenant: str, version: str | None = None, *, fresh: bool = False) -> Report:
        return await self.run(self.request(tenant, version, fresh=fresh))

    async def run(self, request: CheckRequest) -> Report:
        key = self._report_key(request)
        if not request.fresh and self.cache is not None:
            cached = await self.cache.get_json(key)
            if cached:
                report = Report.from_json(cached)
                report.cached = True
                return report
        if request.fresh and request.tenant.value in self._token_failed:
            # msal caches token errors for 60 s: a re-check right after consent must not see the old refusal.
            self.tokens.forget(request.tenant)

        started = time.perf_counter()
        waves = WaveCounter()
        with track_round_trips() as trips:
            snapshot = await self._snapshot(request.tenant, waves)
        report = evaluate(snapshot, self.catalog, request.version, self.remedies, cpv_mode=self.settings.itdr_cpv_mode)
        report.round_trips = trips.total
        report.waves = waves.waves
        report.duration_ms = round((time.perf_counter() - started) * 1000)
        report.checked_at = datetime.now(UTC).isoformat(timespec="seconds")
        if self.cache is not None and report.verdict.value != "unknown":
            # An "unknown" is never cached: the next try should ask Microsoft again.
            await self.cache.set_json(key, report.to_json(), self.settings.itdr_check_ttl_seconds)
        return report

    async def _snapshot(self, tenant: TenantRef, waves: WaveCounter) -> TenantSnapshot:
        # Wave 0 (cold only): discovery and tokens for Graph and Exchange, in parallel.
        before = self.tokens.token_requests
        with track_round_trips() as login:
            results = await asyncio.gather(
                self.tokens.get_token(tenant, Resource.GRAPH),
                self.tokens.get_token(tenant, Resource.EXCHANGE),
                return_exceptions=True,
            )
        issued = self.tokens.token_requests - before
        # msal's OIDC discovery (a new tenant) comes before the token requests, which run in parallel.
        waves.waves += (login.total > issued) + (issued > 0)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            self._token_failed.add(tenant.value)
            return self._token_failure(tenant, failure)
        self._token_failed.discard(tenant.value)
        tenant_id = await self.tokens.tenant_id(tenant)
        return await self.collector.collect(tenant_id, waves)

    def _token_failure(self, tenant: TenantRef, error: BaseException) -> TenantSnapshot:
        info = TenantInfo(id=tenant.value, domain=None if tenant.is_guid else tenant.value)
        if isinstance(error, AppNotInTenant | MissingServicePrincipal) and self.self_check:
            # Exchange role group contents stay unknown: without a token nothing else can be read.
            snapshot = TenantSnapshot.unreadable(info, "the ITDR app is not in the tenant, so nothing can be read")
            snapshot.service_principal = Reading(value=None)
            return snapshot
        if isinstance(error, TenantNotFound):
            reason = f"Microsoft does not know the tenant '{tenant.value}' (AADSTS90002): check the spelling."
        elif isinstance(error, AppNotInTenant | MissingServicePrincipal):
            reason = (f"the checking app ({self.settings.itdr_client_id}) is not consented in this tenant, so it "
                      f"cannot read its grants ({type(error).__name__}).")
        elif isinstance(error, BadClientSecret):
            reason = "the bot's own client secret was rejected (expired or wrong): an operator must renew it."
        elif isinstance(error, TokenError | MicrosoftError):
            reason = error.message
        else:
            log.exception("unexpected error getting tokens", exc_info=error)
            reason = f"unexpected error ({type(error).__name__})"
        return TenantSnapshot.unreadable(info, reason)

    async def aclose(self) -> None:
        await self.clients.aclose()
