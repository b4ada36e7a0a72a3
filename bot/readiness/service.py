"""The readiness check end to end: validate the request once, get tokens, collect, evaluate, cache."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from bot import metrics, ops
from bot.microsoft import MicrosoftClients
from bot.microsoft.errors import (
    AppNotInTenant,
    BadClientSecret,
    MicrosoftError,
    MissingServicePrincipal,
    TenantNotFound,
    TokenError,
)
from bot.microsoft.http import Priority, track_round_trips
from bot.microsoft.tenant import TenantRef, parse_tenant
from bot.microsoft.tokens import Resource
from bot.readiness.collect import Collector, WaveCounter
from bot.readiness.evaluate import Remedies, evaluate
from bot.readiness.fix import Plan, Planner
from bot.readiness.limits import CheckLimits
from bot.readiness.model import Reading, Report, TenantInfo, TenantSnapshot, Verdict
from bot.settings import Settings
from bot.store import Cache
from catalog import Catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckRequest:
    """A validated check: a tenant that is safe to put in a URL, and a revision the catalog has."""

    tenant: TenantRef
    version: str


class TenantUnresolved(Exception):
    """Microsoft did not say which tenant a domain is (or refused to); str(exc) is a sentence for the user."""


class ReadinessService:
    """One per process: shares the httpx client, msal apps and caches across every check."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        cache: Cache | None = None,
        limits: CheckLimits | None = None,
        clients: MicrosoftClients | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.cache = cache
        self.clients = clients or MicrosoftClients(settings)
        self.tokens = self.clients.tokens
        self._token_failed: set[str] = set()  # tenants whose last token request was refused
        self.target_app_id = settings.target_app_id
        # When the bot signs in as the ITDR app itself, "app not in tenant" is the answer, not a fault.
        self.self_check = self.target_app_id == settings.itdr_client_id
        self.remedies = Remedies(settings.authority_host, self.target_app_id)
        self.planner = Planner(catalog, settings.graph_url, self.remedies.admin_consent_url, self.target_app_id)
        self.collector = Collector(
            catalog,
            lambda tenant, priority: self.clients.graph(tenant, priority=priority),
            self.clients.exchange,
            self.target_app_id,
            cache=cache,
            limits=limits,
            cpv_mode=settings.itdr_cpv_mode,
            cache_scope=settings.graph_url.split("://", 1)[-1],
        )

    def request(self, tenant: str, version: str | None = None) -> CheckRequest:
        """Validate user input before anything reaches a URL: raises InvalidTenant or UnknownVersion."""
        revision = self.catalog.revision(version) if version else self.catalog.latest
        return CheckRequest(parse_tenant(tenant), revision.version)

    async def tenant_guid(self, tenant: TenantRef) -> str:
        """The tenant's GUID (a domain resolved by Entra's discovery, which msal does anyway): what the
        admin-consent redirect returns and what watches and audits are keyed by. The one way to resolve it;
        TenantUnresolved otherwise."""
        try:
            resolved = await self.tokens.tenant_id(tenant)
        except MicrosoftError as exc:
            raise TenantUnresolved(exc.message) from None
        if not resolved or (not tenant.is_guid and resolved == tenant.value):
            raise TenantUnresolved(f"Microsoft did not say which tenant `{tenant.value}` is; use the tenant id.")
        return resolved

    def _report_key(self, request: CheckRequest) -> str:
        return f"check:{self.settings.graph_url.split('://', 1)[-1]}:{request.tenant.value}:{request.version}"

    async def cached(self, request: CheckRequest) -> Report | None:
        """The last report for this tenant and revision, if the cache still has it."""
        if self.cache is None:
            return None
        raw = await self.cache.get_text(self._report_key(request))
        if raw is None:
            return None
        try:
            return Report.model_validate_json(raw).model_copy(update={"cached": True})
        except ValidationError:  # written by an older version: ask Microsoft again
            return None

    async def check(self, tenant: str, version: str | None = None, *, fresh: bool = False,
                    priority: Priority = Priority.HIGH) -> Report:
        """`run` for raw input (the command line, tests): validates, then checks."""
        return await self.run(self.request(tenant, version), fresh=fresh, priority=priority)

    async def run(self, request: CheckRequest, *, fresh: bool = False, priority: Priority = Priority.HIGH) -> Report:
        """Check a tenant (or answer from the cache unless `fresh`). Never raises for a Microsoft fault: what could
        not be read is `unknown`, with `retry_after` set when Microsoft said when to come back."""
        if not fresh and (report := await self.cached(request)) is not None:
            return report
        if fresh and request.tenant.value in self._token_failed:
            # msal caches token errors for 60 s: a re-check right after consent must not see the old refusal.
            self.tokens.forget(request.tenant)

        started = time.perf_counter()
        waves = WaveCounter()
        with track_round_trips() as trips:
            try:
                async with asyncio.timeout(self.settings.itdr_check_deadline_seconds):
                    snapshot = await self._snapshot(request.tenant, waves, priority)
            except TimeoutError:
                snapshot = TenantSnapshot.unreadable(
                    _tenant_info(request.tenant),
                    f"Microsoft did not answer within {self.settings.itdr_check_deadline_seconds:g} s "
                    "(ITDR_CHECK_DEADLINE_SECONDS)",
                )
        report = evaluate(snapshot, self.catalog, request.version, self.remedies, cpv_mode=self.settings.itdr_cpv_mode)
        report = report.model_copy(update={
            "round_trips": trips.total,
            "waves": waves.waves,
            "duration_ms": round((time.perf_counter() - started) * 1000),
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        metrics.READINESS_CHECKS.labels(verdict=report.verdict.value).inc()
        metrics.READINESS_SECONDS.observe(time.perf_counter() - started)
        if self.cache is not None and report.verdict is not Verdict.unknown:
            # An "unknown" is never cached: the next try should ask Microsoft again.
            await self.cache.set_text(self._report_key(request), report.model_dump_json(),
                                      self.settings.itdr_check_ttl_seconds)
        return report

    async def plan(self, request: CheckRequest, *, fresh: bool = False) -> tuple[Report, Plan]:
        """The fix plan from a fresh (or cached) check; raises PlanRefused when nothing could be read."""
        report = await self.run(request, fresh=fresh)
        return report, self.planner.plan(report)

    async def _snapshot(self, tenant: TenantRef, waves: WaveCounter, priority: Priority) -> TenantSnapshot:
        if self.tokens.cached_token(tenant, Resource.GRAPH) and self.tokens.cached_token(tenant, Resource.EXCHANGE):
            # Warm: both tokens are in the token map, so no login wave and no tasks to start for one.
            self._token_failed.discard(tenant.value)
            return await self.collector.collect(await self.tokens.tenant_id(tenant), waves, priority)
        # Wave 0 (cold only): discovery and tokens for Graph and Exchange, in parallel.
        with track_round_trips() as login:
            results = await asyncio.gather(
                self.tokens.get_token(tenant, Resource.GRAPH),
                self.tokens.get_token(tenant, Resource.EXCHANGE),
                return_exceptions=True,
            )
        # msal's OIDC discovery (a new tenant) comes before the token requests, which run in parallel.
        waves.waves += (login.total > login.token_requests) + (login.token_requests > 0)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            self._token_failed.add(tenant.value)
            return self._token_failure(tenant, failure)
        self._token_failed.discard(tenant.value)
        tenant_id = await self.tokens.tenant_id(tenant)
        return await self.collector.collect(tenant_id, waves, priority)

    def _token_failure(self, tenant: TenantRef, error: BaseException) -> TenantSnapshot:
        info = _tenant_info(tenant)
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
            ops.note_rejected_secret(error.aadsts, error.message)
        elif isinstance(error, TokenError | MicrosoftError):
            reason = error.message
        else:
            log.error("unexpected error getting tokens: %s", type(error).__name__, exc_info=error)
            reason = f"unexpected error ({type(error).__name__})"
        return TenantSnapshot.unreadable(info, reason)

    async def aclose(self) -> None:
        await self.clients.aclose()


def _tenant_info(tenant: TenantRef) -> TenantInfo:
    return TenantInfo(id=tenant.value, domain=None if tenant.is_guid else tenant.value)
