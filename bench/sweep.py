"""Fleet sweep bench: watched tenants checked by real `itdr worker` processes against a fake Microsoft with 100 ms
per request, beside a bare asyncio client sending the same requests per tenant at the same concurrency.

    REDIS_URL=redis://127.0.0.1:6379 .venv/bin/python bench/sweep.py [--tenants 10000] [--concurrency 20]
        [--workers 1 2] [--fake-procs 2] [--latency 0.1] [--root CHECKOUT] [--py-spy PATH --profile DIR]

`--concurrency` defaults to ITDR_WORKER_CONCURRENCY's default, 20, and the baseline runs at the same concurrency,
so the ratios compare like with like. `--root` runs another checkout's workers (an A/B of worker code under the
same fake, baseline and sweeps); `--py-spy` profiles the first worker during each sweep.

Processes (each child in its own session, always stopped: on exit, errors, Ctrl-C and SIGTERM):

* the fake Microsoft (`bot/simulated/microsoft.py`: login with OIDC discovery and client-credentials tokens, Graph
  with `$batch`, the Exchange admin API, over HTTPS with a throwaway CA), `--fake-procs` processes sharing its three
  listening sockets, `--latency` added to every HTTP request (not per `$batch` sub-request). `--tenants` tenants,
  each granting the ITDR app everything the latest revision asks (verdict ready, so no sweep finds drift). Bench
  only: its tokens name their tenant (any fake process accepts a token another issued), requests are counted in
  shared memory instead of recorded, and `GET /__bench/stats` on the login port returns those counts.
* the baseline, "the floor on this machine and this fake": a bare asyncio client (aiohttp, one keep-alive pool, no
  bot code) doing per tenant exactly the HTTP requests of a check, `--concurrency` tenants in flight per process,
  1 process beside 1 worker and 2 beside 2 (the same total concurrency). Cold: OIDC discovery, then the Graph and
  Exchange tokens together, then the check's wave; warm (tokens kept from the cold pass): the wave alone, one Graph
  `$batch` POST with the check's sub-requests (the 6 reads, warm also the 3 role-management reads filtered on the
  app's object id taken from the cold pass, as the check caches it; cold also the 3 resource service principals)
  and the 3 Exchange `InvokeCommand` POSTs, all four at once. Every response is read and parsed and its status checked.
* `itdr worker` (`python -m bot.cli worker`), 1 and then 2 processes, ITDR_WORKER_CONCURRENCY = `--concurrency`
  each, ITDR_EXCHANGE_CONCURRENCY = their total (the fleet-wide Exchange limit, default 20, would otherwise be the
  limit, and the baseline has none), ITDR_SWEEP_SPREAD_SECONDS=0, the cron sweep far away (1 January), Slack at
  the stand-in below, LOG_LEVEL as given (default INFO, as deployed); their output goes to a log file that is
  shown when something fails.
* this process: the stand-in Slack (answers auth.test and chat.postMessage; no post is expected), the import of
  the watched tenants (`DriftStore.watch_many`, 1,000 rows a transaction, spread over 4 channels) and the sweeps.

Each worker configuration gets a fresh Redis prefix (so its first sweep is the tenants' first, as after an import)
and fresh processes. Its first sweep is cold (no msal app, token, discovery document or cached resource ids: a
tenant costs 3 waves), its second warm and unchanged: the time of a sweep in which nothing changed. A sweep is
started with the engine (`start_sweep`, as `itdr sweep` does: it enqueues one job per tenant) and timed until its
progress is done (the last check queues the finishing job, which marks it finished); its tenants per second are
tenants / that time. The fake's request counts per sweep are printed: with 2 workers a tenant's second check may
land on the other worker, which has no token for it yet, so that sweep is partly cold (msal keeps tokens per
process).

Figures: CPU per tenant of every process (the workers' and the fake's all threads from /proc/PID/stat, this
process's own, the Redis server's from INFO), the machine's busy share of all cores over the run (/proc/stat,
everything on the machine), the workers' peak RSS (VmHWM), Redis memory per tenant after the import and both
sweeps: the MEMORY USAGE of every key the configuration made (ours and SAQ's, by family) and, for reference, the
growth of INFO used_memory (the whole server: anyone else's keys too). "CPU of one warm check" is the worker's CPU
over the warm sweep of 1 worker divided by its tenants: the whole job (SAQ, the check, the snapshot).

Targets (issue 9): 1 worker >= 0.7x the baseline at its concurrency; 2 workers >= 1.7x one (when the machine's
cores are the limit, the baseline's own scaling from 1 to 2 processes shows it); peak RSS <= 250 MB per worker;
CPU of one warm check <= 10 ms. Redis: REDIS_URL (every key of the bench is deleted afterwards, SAQ's included),
else an embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _harness import AUTH_TEST, StandIn, child_env, die_with_parent, forget_keys, run_with_redis, spawn, stop

ROOT = Path(__file__).resolve().parents[1]
BOT_TOKEN = "xoxb-bench-sweep-token"
CHANNELS = [f"C0BENCH{n:02d}" for n in range(4)]
TENANT_NAMESPACE = uuid.UUID("5f0c6a52-7d0e-4c1e-9a47-2b8e1f3c9d10")
KINDS = ("login", "graph", "exchange", "graph sub-requests")
IMPORT_CHUNK = 1000
FAR_CRON = "0 0 1 1 *"  # the cron sweep: once a year, on 1 January
TARGETS = {"ratio": 0.7, "scaling": 1.7, "rss_mb": 250.0, "cpu_ms": 10.0}
TIMEOUT = 1800.0  # one sweep or baseline pass, at most


def tenant_ids(count: int, seed: str) -> list[str]:
    """The bench's tenant GUIDs, the same in every process."""
    return [str(uuid.uuid5(TENANT_NAMESPACE, f"{seed}:{n}")) for n in range(count)]


# ----------------
#  child: the fake Microsoft, in several processes
# ----------------


def serve_fake(args: argparse.Namespace) -> None:
    import multiprocessing

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from catalog import Kind, load_catalog
    from tests.fakes.microsoft import FakeMicrosoft, RecordedRequest, TenantScenario

    class BenchFake(FakeMicrosoft):
        """Tokens any process accepts, requests counted per process in shared memory instead of recorded."""

        def __init__(self, latency: float, procs: int) -> None:
            super().__init__(latency=latency)
            self.index = 0
            self.counters = multiprocessing.RawArray("q", procs * len(KINDS))  # one row per process: no races
            self.procs = procs

        def _record(self, item: RecordedRequest) -> None:
            kind = 3 if item.in_batch else KINDS.index(item.service)
            self.counters[self.index * len(KINDS) + kind] += 1

        def _token(self, scenario: TenantScenario, form: dict[str, str]) -> tuple[int, dict[str, str], Any]:
            status, headers, body = super()._token(scenario, form)
            if status == 200:
                with self._lock:
                    tenant, service = self._tokens.pop(body["access_token"])
                body["access_token"] = f"fake.{tenant}.{service}.{uuid.uuid4().hex}"
            return status, headers, body

        def _bearer(self, request: Request, service: str) -> TenantScenario | None:
            parts = request.headers.get("authorization", "").removeprefix("Bearer ").split(".")
            if len(parts) != 4 or parts[0] != "fake" or parts[2] != service:
                return None
            return self._tenant(parts[1])

        def stats(self) -> dict[str, int]:
            return {kind: sum(self.counters[p * len(KINDS) + k] for p in range(self.procs))
                    for k, kind in enumerate(KINDS)}

        async def _handle(self, request: Request) -> Response:
            if request.url.path == "/__bench/stats":
                return JSONResponse(self.stats())
            return await super()._handle(request)

        def serve(self, sockets: list[Any]) -> None:
            app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])
            config = uvicorn.Config(app, ssl_certfile=str(self.tls.server_cert_path),
                                    ssl_keyfile=str(self.tls.server_key_path), log_config=None, log_level="warning",
                                    access_log=False, lifespan="off", timeout_keep_alive=60,
                                    timeout_graceful_shutdown=1, backlog=4096)
            uvicorn.Server(config).run(sockets=sockets)

    catalog = load_catalog()
    items = [item for item in catalog.current_items if not item.cpv_only]
    grants = [(i.ids.resource_app_id, i.ids.application_id) for i in items if i.kind is Kind.application_permission]
    roles = [i.ids.template_id for i in items if i.kind is Kind.directory_role]
    fake = BenchFake(args.latency, args.fake_procs)
    for n, tenant in enumerate(tenant_ids(args.tenants, args.seed)):  # every tenant grants everything: ready
        fake.tenants[tenant] = TenantScenario(tenant, domains=[f"bench{n}.onmicrosoft.com"],
                                              display_name=f"Bench {n}", app_role_assignments=grants,
                                              directory_roles=roles)
    sockets = fake.listen(backlog=4096)
    children = []
    for index in range(1, args.fake_procs):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a forked fake process
            die_with_parent()
            fake.index = index
            try:
                fake.serve(sockets)
            finally:
                os._exit(0)
        children.append(pid)
    ready = {"ports": fake.ports, "ca": str(fake.ca_path), "client_id": fake.client_id,
             "client_secret": fake.client_secret, "target_app_id": fake.target_app_id,
             "pids": [os.getpid(), *children]}
    Path(args.ready + ".tmp").write_text(json.dumps(ready))
    os.rename(args.ready + ".tmp", args.ready)
    # uvicorn re-raises the SIGTERM it stopped on: exit through Python so the cleanup below (TLS files) runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        fake.serve(sockets)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        fake._dir.cleanup()


# ----------------
#  child: the baseline, a bare asyncio client
# ----------------


@dataclass(frozen=True)
class Requests:
    """What a check sends for one tenant, mirrored from bot/readiness/collect.py and bot/microsoft/*."""

    login: str
    graph: str
    exchange: str
    client_id: str
    client_secret: str
    warm_subs: tuple[tuple[str, str], ...]
    cold_batch: bytes

    def warm_batch(self, sp_id: str | None) -> bytes:
        """The warm batch: with the app's object id cached, the role-management reads ride in it."""
        subs = list(self.warm_subs)
        if sp_id:
            principal = f"?$filter=principalId eq '{sp_id}'&$select=roleDefinitionId,directoryScopeId"
            subs += [("assignments", f"/roleManagement/directory/roleAssignments{principal}"),
                     ("eligible", f"/roleManagement/directory/roleEligibilitySchedules{principal}"),
                     ("ends", f"/roleManagement/directory/roleAssignmentScheduleInstances{principal},endDateTime")]
        return _batch(subs)

    @classmethod
    def of(cls, fake: dict[str, Any]) -> Requests:
        from catalog import Api, load_catalog

        catalog = load_catalog()
        ports = fake["ports"]
        target = f"/servicePrincipals(appId='{fake['target_app_id']}')"
        warm = [
            ("sp", f"{target}?$select=id,appId,displayName,accountEnabled"),
            ("grants", f"{target}/appRoleAssignments?$select=appRoleId,resourceId"),
            ("roles", f"{target}/memberOf/microsoft.graph.directoryRole?$select=roleTemplateId"),
            ("org", "/organization?$select=id,displayName,verifiedDomains,assignedPlans"),
            ("ca", "/identity/conditionalAccess/policies?$select=id,displayName,state,conditions,grantControls"),
            ("secdefaults", "/policies/identitySecurityDefaultsEnforcementPolicy?$select=isEnabled"),
        ]
        resources = [catalog.resources[api]["app_id"] for api in (Api.graph, Api.exchange, Api.o365_management)]
        cold = warm + [(f"res{n}", f"/servicePrincipals(appId='{app}')?$select=id,appId")
                       for n, app in enumerate(resources)]

        return cls(login=f"https://127.0.0.1:{ports['login']}", graph=f"https://127.0.0.1:{ports['graph']}",
                   exchange=f"https://127.0.0.1:{ports['exchange']}", client_id=fake["client_id"],
                   client_secret=fake["client_secret"], warm_subs=tuple(warm), cold_batch=_batch(cold))


def _batch(subs: list[tuple[str, str]]) -> bytes:
    return json.dumps({"requests": [{"id": i, "method": "GET", "url": u} for i, u in subs]},
                      separators=(",", ":")).encode()


CMDLETS = (
    ("Get-AdminAuditLogConfig", {}, "UnifiedAuditLogIngestionEnabled"),
    ("Get-OrganizationConfig", {}, "IsDehydrated"),
    ("Get-ManagementRoleAssignment", {"RoleAssignee": "Organization Management", "Delegating": False}, None),
)


async def baseline_main(args: argparse.Namespace) -> None:
    """Reads `cold` and `warm` on stdin, answers each with one JSON line; `ready` once set up."""
    import aiohttp

    fake = args.fake_info
    asks = Requests.of(fake)
    tenants = tenant_ids(args.tenants, args.seed)[args.index::args.of]
    tokens: dict[str, tuple[str, str]] = {}
    errors: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=fake["ca"]), limit=0)
    session = aiohttp.ClientSession(connector=connector)

    async def call(method: str, url: str, what: str, **kwargs: Any) -> Any:
        async with session.request(method, url, **kwargs) as response:
            body = await response.read()
            if response.status != 200:
                errors[f"{what} {response.status}"] += 1
                return None
            return json.loads(body)

    async def token(tenant: str, service: str, base: str) -> str:
        form = {"client_id": asks.client_id, "client_secret": asks.client_secret, "scope": f"{base}/.default",
                "grant_type": "client_credentials"}
        body = await call("POST", f"{asks.login}/{tenant}/oauth2/v2.0/token", "token", data=form)
        return str((body or {}).get("access_token", ""))

    sp_ids: dict[str, str] = {}  # the app's object id per tenant, as the check caches it

    async def wave(tenant: str, batch: bytes) -> None:
        graph, exchange = tokens[tenant]
        graph_headers = {"Authorization": f"Bearer {graph}", "Accept": "application/json",
                         "x-ms-throttle-priority": "low", "Content-Type": "application/json"}
        exchange_headers = {"Authorization": f"Bearer {exchange}", "Content-Type": "application/json; charset=utf-8",
                            "Accept": "application/json",
                            "X-AnchorMailbox": f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant}",
                            "X-ResponseFormat": "json", "X-SerializationLevel": "Partial",
                            "Prefer": "odata.maxpagesize=1000"}
        url = f"{asks.exchange}/adminapi/beta/{tenant}/InvokeCommand"
        results = await asyncio.gather(
            call("POST", f"{asks.graph}/v1.0/$batch", "graph $batch", data=batch, headers=graph_headers),
            *(call("POST", url, "exchange", params={"$select": select} if select else None,
                   headers=exchange_headers | {"Connection-Id": str(uuid.uuid4())},
                   data=json.dumps({"CmdletInput": {"CmdletName": name, "Parameters": parameters}}))
              for name, parameters, select in CMDLETS))
        if results[0] is not None:
            for sub in results[0].get("responses") or []:
                if sub.get("status") != 200:
                    errors[f"sub-request {sub.get('id')} {sub.get('status')}"] += 1
                elif sub.get("id") == "sp":
                    sp_ids[tenant] = str((sub.get("body") or {}).get("id") or "")

    async def cold(tenant: str) -> None:
        await call("GET", f"{asks.login}/{tenant}/v2.0/.well-known/openid-configuration", "discovery")
        graph, exchange = await asyncio.gather(token(tenant, "graph", asks.graph),
                                               token(tenant, "exchange", asks.exchange))
        tokens[tenant] = (graph, exchange)
        await wave(tenant, asks.cold_batch)

    async def warm(tenant: str) -> None:
        await wave(tenant, asks.warm_batch(sp_ids.get(tenant)))

    async def run(each: Any) -> dict[str, Any]:
        errors.clear()
        pending = iter(tenants)

        async def client() -> None:
            for tenant in pending:
                try:
                    await each(tenant)
                except Exception as exc:  # counted, shown by the parent
                    errors[type(exc).__name__] += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        return {"tenants": len(tenants), "seconds": time.perf_counter() - started,
                "cpu": time.process_time() - cpu, "errors": dict(errors)}

    try:
        print("ready", flush=True)
        while line := (await asyncio.to_thread(sys.stdin.readline)).strip():
            print(json.dumps({"phase": line} | await run(cold if line == "cold" else warm)), flush=True)
    finally:
        await session.close()


# ----------------
#  parent: machine and process figures
# ----------------


def process_cpu(pid: int) -> float:
    """utime + stime of every thread of a process, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Meter:
    """CPU of named process groups, this process, the Redis server and the machine, over a block."""

    groups: dict[str, list[int]]
    redis: Any
    cpu: dict[str, float] = field(default_factory=dict)
    busy_share: float = 0.0
    seconds: float = 0.0

    async def _redis_cpu(self) -> float:
        info = await self.redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    @contextlib.asynccontextmanager
    async def measure(self) -> Any:
        before = {name: sum(process_cpu(pid) for pid in pids) for name, pids in self.groups.items()}
        redis_before, own_before, machine_before = await self._redis_cpu(), time.process_time(), machine_busy()
        started = time.perf_counter()
        yield self
        self.seconds = time.perf_counter() - started
        self.cpu = {name: sum(process_cpu(pid) for pid in pids) - before[name] for name, pids in self.groups.items()}
        self.cpu["bench"] = time.process_time() - own_before
        self.cpu["redis"] = await self._redis_cpu() - redis_before
        busy, total = machine_busy()
        self.busy_share = (busy - machine_before[0]) / max(1, total - machine_before[1])

    def per_tenant_ms(self, tenants: int) -> str:
        return ", ".join(f"{name} {seconds / tenants * 1000:.2f}" for name, seconds in self.cpu.items())


# ----------------
#  parent: stand-in Slack, fake, baseline, workers
# ----------------


class Slack(StandIn):
    def __init__(self) -> None:
        super().__init__()
        self.posts: Counter[str] = Counter()

    async def handle(self, path: str, body: bytes) -> bytes:
        method = path.removeprefix("/api/").split("?", 1)[0]
        if method == "auth.test":
            return AUTH_TEST
        self.posts[method] += 1
        return b'{"ok": true, "channel": "C0BENCH00", "ts": "1800000000.000100"}'


class Fake:
    def __init__(self, args: argparse.Namespace, directory: Path) -> None:
        self.ready = directory / "fake.json"
        self.proc = spawn([sys.executable, __file__, "--child=fake", f"--tenants={args.tenants}",
                           f"--seed={args.seed}", f"--latency={args.latency}", f"--fake-procs={args.fake_procs}",
                           f"--ready={self.ready}"], cwd=ROOT, env=child_env(ROOT))
        self.info: dict[str, Any] = {}

    async def wait(self) -> None:
        deadline = time.monotonic() + 120
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the fake Microsoft did not start (exit status {self.proc.poll()})")
            await asyncio.sleep(0.1)
        self.info = json.loads(self.ready.read_text())

    @property
    def pids(self) -> list[int]:
        return list(self.info.get("pids", [self.proc.pid]))

    def url(self, service: str) -> str:
        return f"https://127.0.0.1:{self.info['ports'][service]}"

    async def stats(self) -> dict[str, int]:
        import httpx

        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=self.info["ca"])) as client:
            response = await client.get(f"{self.url('login')}/__bench/stats")
            return dict(response.json())

    def stop(self) -> None:
        stop([self.proc])
        for pid in self.pids[1:]:  # forked by it, in its process group; normally gone with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def requests_between(before: dict[str, int], after: dict[str, int]) -> str:
    return ", ".join(f"{kind} {after[kind] - before[kind]}" for kind in KINDS)


@dataclass
class Pass:
    name: str
    tenants: int
    seconds: float
    meter: Meter
    requests: str
    extra: str = ""

    @property
    def rate(self) -> float:
        return self.tenants / self.seconds


def print_pass(result: Pass) -> None:
    print(f"  {result.name:<26} {result.tenants:>6} tenants {result.seconds:>8.1f} s {result.rate:>8.1f} /s   "
          f"machine busy {result.meter.busy_share * 100:3.0f}%{result.extra}")
    print(f"  {'':<26} cpu ms/tenant: {result.meter.per_tenant_ms(result.tenants)}")
    print(f"  {'':<26} requests: {result.requests}")


async def read_line(proc: subprocess.Popen[bytes], what: str) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), TIMEOUT)
    if not line:
        raise RuntimeError(f"{what} exited (status {proc.poll()})")
    return line.decode().strip()


async def run_baseline(args: argparse.Namespace, fake: Fake, procs: int, redis: Any) -> dict[str, Pass]:
    children = [spawn([sys.executable, __file__, "--child=baseline", f"--tenants={args.tenants}",
                       f"--seed={args.seed}", f"--ready={fake.ready}", f"--concurrency={args.concurrency}",
                       f"--index={n}", f"--of={procs}"], cwd=ROOT, env=child_env(ROOT),
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE) for n in range(procs)]
    results: dict[str, Pass] = {}
    try:
        for child in children:
            if await read_line(child, "the baseline") != "ready":
                raise RuntimeError("the baseline did not start")
        for phase in ("cold", "warm"):
            meter = Meter({"client": [c.pid for c in children], "fake": fake.pids}, redis)
            before = await fake.stats()
            async with meter.measure():
                for child in children:
                    assert child.stdin is not None
                    child.stdin.write(f"{phase}\n".encode())
                    child.stdin.flush()
                answers = [json.loads(await read_line(child, "the baseline")) for child in children]
            errors: Counter[str] = Counter()
            for answer in answers:
                errors.update(answer["errors"])
            if errors:
                raise RuntimeError(f"baseline {phase}: {dict(errors)}")
            results[phase] = Pass(f"baseline {procs}x{args.concurrency} {phase}",
                                  sum(a["tenants"] for a in answers), meter.seconds, meter,
                                  requests_between(before, await fake.stats()))
    finally:
        for child in children:
            with contextlib.suppress(OSError):
                assert child.stdin is not None
                child.stdin.close()
        stop(children)
    return results


def worker_env(args: argparse.Namespace, fake: Fake, api_url: str, redis_url: str, prefix: str,
               workers: int) -> dict[str, str]:
    env = {k: v for k, v in child_env(args.root).items() if not k.startswith(("ITDR_", "REDIS_"))}
    return env | {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": api_url,
        "LOG_LEVEL": args.log_level,
        "ITDR_CLIENT_ID": fake.info["client_id"],
        "ITDR_CLIENT_SECRET": fake.info["client_secret"],
        "ITDR_TARGET_APP_ID": fake.info["target_app_id"],
        "ITDR_AUTHORITY_HOST": fake.url("login"),
        "ITDR_GRAPH_URL": fake.url("graph"),
        "ITDR_EXCHANGE_URL": fake.url("exchange"),
        "SSL_CERT_FILE": fake.info["ca"],
        "REQUESTS_CA_BUNDLE": fake.info["ca"],
        "ITDR_SWEEP_SPREAD_SECONDS": "0",
        "ITDR_SWEEP_CRON": FAR_CRON,
        "ITDR_WORKER_CONCURRENCY": str(args.concurrency),
        "ITDR_EXCHANGE_CONCURRENCY": str(min(500, args.concurrency * workers)),
    }


_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SWEEP = re.compile(r"\d{8}T\d{6}-[0-9a-f]{6}")
_CHANNEL = re.compile(r"C0BENCH\d\d")


async def key_memory(redis: Any, prefix: str) -> Counter[str]:
    """MEMORY USAGE of every key the configuration made, summed per key family."""
    families: Counter[str] = Counter()
    for pattern in (f"{prefix}*", f"saq:*{prefix}*"):
        keys = [key async for key in redis.scan_iter(match=pattern, count=2000)]
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            async with redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.memory_usage(key, samples=0)
                sizes = await pipe.execute()
            for key, size in zip(chunk, sizes, strict=True):
                name = key.decode().replace(prefix, "")
                name = _CHANNEL.sub("{channel}", _SWEEP.sub("{sweep}", _GUID.sub("{tenant}", name)))
                families[name] += size or 0
    return families


async def used_memory(redis: Any) -> int:
    return int((await redis.info("memory"))["used_memory"])


@dataclass
class Config:
    workers: int
    sweeps: list[Pass] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    memory: Counter[str] = field(default_factory=Counter)
    used_memory_growth: int = 0
    import_seconds: float = 0.0


async def run_workers(args: argparse.Namespace, fake: Fake, slack: Slack, redis_url: str, workers: int,
                      directory: Path, redis: Any) -> Config:
    from bot.drift.store import DriftStore, WatchedTenant
    from bot.drift.sweep import queue_for, start_sweep
    from bot.settings import load_settings
    from bot.store import RedisConnections

    prefix = f"itdr-bench-sweep:{uuid.uuid4().hex[:8]}:"
    config = Config(workers)
    settings = load_settings(_env_file=None, redis_url=redis_url, redis_prefix=prefix, itdr_sweep_spread_seconds=0)
    connections = RedisConnections(redis_url, prefix)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        store = DriftStore(connections.state)
        memory_before = await used_memory(redis)
        started = time.perf_counter()
        added_at = datetime.now(UTC)
        rows = [(WatchedTenant(id=tenant, added_by="itdr import", added_at=added_at), CHANNELS[n % len(CHANNELS)])
                for n, tenant in enumerate(tenant_ids(args.tenants, args.seed))]
        for start in range(0, len(rows), IMPORT_CHUNK):
            await store.watch_many(rows[start:start + IMPORT_CHUNK])
        config.import_seconds = time.perf_counter() - started

        env = worker_env(args, fake, slack.api_url, redis_url, prefix, workers)
        for n in range(workers):
            logs.append((args.logs or directory) / f"worker-{workers}-{n}.log")
            with logs[-1].open("wb") as log:
                procs.append(spawn([sys.executable, "-m", "bot.cli", "worker"], cwd=args.root, env=env, stdout=log,
                                   stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while len([k async for k in redis.scan_iter(match=f"saq:{prefix}jobs:worker_info:*")]) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("the workers did not start")
            await asyncio.sleep(0.2)

        queue = queue_for(connections, settings)
        for name in ("cold", "warm"):
            meter = Meter({"workers": [p.pid for p in procs], "fake": fake.pids}, redis)
            before = await fake.stats()
            spy = (spawn([args.py_spy, "record", "--pid", str(procs[0].pid), "--rate", "200", "--nonblocking",
                          "--format", "raw", "-o", str(args.profile / f"worker-{workers}-{name}.txt")],
                         cwd=ROOT, env=child_env(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   if args.py_spy else None)
            async with meter.measure():
                sweep = await start_sweep(queue, store, settings, now=datetime.now(UTC))
                enqueued = time.perf_counter()
                while True:
                    progress = await store.progress(sweep)
                    if progress is not None and progress.done:
                        break
                    if any(p.poll() is not None for p in procs):
                        raise RuntimeError("a worker exited during the sweep")
                    if time.perf_counter() - enqueued > TIMEOUT:
                        raise RuntimeError(f"the sweep did not finish: {progress}")
                    await asyncio.sleep(0.1)
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its profile when interrupted
                await asyncio.to_thread(spy.wait, 60)
            result = progress.to_json()
            if result["checked"] != args.tenants or result["changed"] or result["unknown"]:
                raise RuntimeError(f"{name} sweep: {result}")
            config.sweeps.append(Pass(f"{workers} worker{'s' if workers > 1 else ''} x{args.concurrency} {name}",
                                      args.tenants, meter.seconds, meter, requests_between(before,
                                                                                           await fake.stats()),
                                      extra=f", sweep's own clock {result['duration_ms'] / 1000:.1f} s"))
        config.rss_mb = [peak_rss_mb(p.pid) for p in procs]
        config.memory = await key_memory(redis, prefix)
        config.used_memory_growth = await used_memory(redis) - memory_before
        return config
    except BaseException:
        for log in logs:
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
            if tail:
                print(f"--- {log.name} (last lines)\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        stop(procs)
        await connections.aclose()
        await forget_keys(redis_url, prefix)
        await forget_keys(redis_url, f"saq:*{prefix}")


# ----------------
#  parent: the run and the report
# ----------------


async def run(args: argparse.Namespace, redis_url: str) -> int:
    import redis.asyncio as aioredis

    slack = Slack()
    await slack.start()
    redis = aioredis.Redis.from_url(redis_url)
    directory = Path(tempfile.mkdtemp(prefix="itdr-bench-sweep-"))
    fake: Fake | None = None
    started = time.perf_counter()
    try:
        print(f"Fleet sweep: {args.tenants} watched tenants, fake Microsoft with {args.latency * 1000:.0f} ms per "
              f"request in {args.fake_procs} process{'es' if args.fake_procs > 1 else ''}, "
              f"{args.concurrency} checks in flight per worker (and per baseline process)")
        print(f"cpus: {os.cpu_count()}; load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
              f"redis: {redis_url.split('@')[-1]}; workers' LOG_LEVEL {args.log_level}"
              + (f"; workers from {args.root}" if args.root != ROOT else ""))
        fake = Fake(args, directory)
        await fake.wait()
        baselines: dict[int, dict[str, Pass]] = {}
        print("baseline (bare aiohttp client, the check's requests; its cold pass fetches the tokens the warm one "
              "uses):")
        for procs in sorted(set(args.workers)) if not args.no_baseline else []:
            baselines[procs] = await run_baseline(args, fake, procs, redis)
            for result in baselines[procs].values():
                print_pass(result)
        configs: dict[int, Config] = {}
        for workers in args.workers:
            config = await run_workers(args, fake, slack, redis_url, workers, directory, redis)
            configs[workers] = config
            print(f"{workers} itdr worker{'s' if workers > 1 else ''} (import of the watched tenants "
                  f"{config.import_seconds:.1f} s):")
            for result in config.sweeps:
                print_pass(result)
            print(f"  {'':<26} peak RSS per worker: {', '.join(f'{mb:.0f} MB' for mb in config.rss_mb)}")
        if baselines:
            report(args, baselines, configs, slack)
        print(f"total {time.perf_counter() - started:.0f} s; load average: "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        return 0
    finally:
        if fake is not None:
            fake.stop()
        await slack.aclose()
        await redis.aclose()
        shutil.rmtree(directory, ignore_errors=True)


def report(args: argparse.Namespace, baselines: dict[int, dict[str, Pass]], configs: dict[int, Config],
           slack: Slack) -> None:
    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print("summary (warm = the sweep in which nothing changed; tenants per second, machine busy share):")
    print(f"  {'':<22} {'cold /s':>9} {'warm /s':>9} {'warm / baseline':>16} {'warm sweep':>11} "
          f"{'10,000 tenants':>15} {'busy':>5}")
    for workers, config in configs.items():
        base = baselines[workers]["warm"]
        cold, warm = config.sweeps[0], config.sweeps[-1]
        print(f"  {f'{workers} worker' + ('s' if workers > 1 else ''):<22} {cold.rate:>9.1f} {warm.rate:>9.1f} "
              f"{warm.rate / base.rate:>15.2f}x {warm.seconds:>9.1f} s {10_000 / warm.rate:>13.0f} s "
              f"{warm.meter.busy_share * 100:>4.0f}%")
        print(f"  {f'baseline {workers}x{args.concurrency}':<22} {baselines[workers]['cold'].rate:>9.1f} "
              f"{base.rate:>9.1f} {'':>16} {'':>11} {10_000 / base.rate:>13.0f} s {base.meter.busy_share * 100:>4.0f}%")
    if 1 in configs:
        ratio = configs[1].sweeps[-1].rate / baselines[1]["warm"].rate
        print(f"  target 1 worker >= {TARGETS['ratio']}x the baseline at its concurrency: {ratio:.2f}x "
              f"{verdict(ratio >= TARGETS['ratio'])}")
        cpu = configs[1].sweeps[-1].meter.cpu["workers"] / args.tenants * 1000
        print(f"  target CPU of one warm check <= {TARGETS['cpu_ms']:g} ms: {cpu:.1f} ms "
              f"{verdict(cpu <= TARGETS['cpu_ms'])} (the worker's CPU over the warm sweep / tenants: SAQ, check, "
              f"snapshot)")
    if 1 in configs and 2 in configs:
        warm = configs[2].sweeps[-1].rate / configs[1].sweeps[-1].rate
        cold = configs[2].sweeps[0].rate / configs[1].sweeps[0].rate
        floor = baselines[2]["warm"].rate / baselines[1]["warm"].rate
        print(f"  target 2 workers >= {TARGETS['scaling']}x one: warm {warm:.2f}x "
              f"{verdict(warm >= TARGETS['scaling'])}, cold {cold:.2f}x; the baseline, 2 processes / 1: {floor:.2f}x "
              f"on {os.cpu_count()} cores")
        print(f"  (the 2 workers' warm sweep asked for tokens again: {configs[2].sweeps[-1].requests.split(',')[0]} "
              f"requests; a tenant checked by the other worker in the first sweep has no token in this one)")
    rss = max(mb for config in configs.values() for mb in config.rss_mb)
    print(f"  target peak RSS <= {TARGETS['rss_mb']:g} MB per worker: max {rss:.0f} MB "
          f"{verdict(rss <= TARGETS['rss_mb'])}")
    first = next(iter(configs.values()))
    total = sum(first.memory.values())
    print(f"  Redis memory per tenant after import + 2 sweeps ({first.workers} worker config): "
          f"{total / args.tenants:.0f} bytes by MEMORY USAGE of its keys (ours and SAQ's); INFO used_memory grew "
          f"{first.used_memory_growth / args.tenants:.0f} bytes per tenant (whole server)")
    for name, size in first.memory.most_common(8):
        print(f"    {size / args.tenants:>7.0f} B/tenant  {name}")
    if slack.posts:
        print(f"  Slack calls (none expected): {dict(slack.posts)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=10_000, help="watched tenants (default 10000)")
    parser.add_argument("--concurrency", type=int, default=20, help="checks in flight per worker (default 20)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes (default 1 2)")
    parser.add_argument("--fake-procs", type=int, default=2, help="fake Microsoft processes (default 2)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per Microsoft request (default 0.1)")
    parser.add_argument("--log-level", default="INFO", help="the workers' LOG_LEVEL (default INFO)")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="checkout whose `itdr worker` is measured (default: this one; the fake, the baseline and "
                             "the sweeps are this checkout's)")
    parser.add_argument("--logs", type=Path, help="keep the workers' output in this directory")
    parser.add_argument("--no-baseline", action="store_true", help="workers only (no ratio, no summary)")
    parser.add_argument("--py-spy", help="profile the first worker of each configuration during its sweeps with "
                                         "this py-spy executable (raw collapsed stacks in --profile)")
    parser.add_argument("--profile", type=Path, default=Path("."), help="where profiles go (default: here)")
    parser.add_argument("--seed", default=uuid.uuid4().hex[:8], help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["fake", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--of", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "fake":
        serve_fake(args)
        return 0
    if args.child == "baseline":
        args.fake_info = json.loads(Path(args.ready).read_text())
        asyncio.run(baseline_main(args))
        return 0
    if args.tenants < 1 or args.concurrency < 1 or min(args.workers) < 1 or args.fake_procs < 1:
        parser.error("--tenants, --concurrency, --workers and --fake-procs must be at least 1")
    sys.path.insert(0, str(ROOT))  # the parent imports and sweeps with this checkout's engine
    return run_with_redis(lambda redis_url: run(args, redis_url))


if __name__ == "__main__":
    sys.exit(main())
