"""One-shot readiness check for the command line: builds the service, runs one check, cleans up."""

from __future__ import annotations

from bot.microsoft.tenant import parse_tenant
from bot.readiness.model import Report
from bot.readiness.service import ReadinessService, StoreCache
from bot.settings import Settings
from catalog import Catalog


async def run_check(settings: Settings, catalog: Catalog, tenant: str, version: str | None, *, fresh: bool) -> Report:
    # Bad input gets its answer before any configuration or network is touched.
    parse_tenant(tenant)
    if version:
        catalog.revision(version)
    store = None
    if settings.redis_url:  # the CLI caches only in a shared Redis; an embedded one would die with the process
        from bot.store import Store

        store = Store.from_url(settings.redis_url, settings.redis_prefix)
    service = ReadinessService(settings, catalog, cache=StoreCache(store) if store else None)
    try:
        return await service.check(tenant, version, fresh=fresh)
    finally:
        await service.aclose()
        if store is not None:
            await store.aclose()
