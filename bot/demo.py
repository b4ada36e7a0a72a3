"""`itdr demo`: the console against a simulated Microsoft cloud and an embedded Redis, with three sample tenants,
so an evaluator sees a check, a consent card and a drift message without a tenant or a Slack workspace.

Nothing is real and nothing leaves the machine: the cloud is `bot.simulated.microsoft` on 127.0.0.1 (the one the
tests run against, speaking Microsoft's documented shapes), Slack is the console's loopback, Redis is embedded.
A worker runs in-process, so `sweep` checks the watched tenants and posts drift as a real one would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

import httpx

from bot.console import CONSOLE_TOKEN, USER, Console, LineHandler, run_console
from bot.drift.sweep import queue_for, sweep_now
from bot.runtime import Runtime
from bot.signals import run_until_signalled
from bot.simulated.microsoft import FakeMicrosoft, Fault, TenantScenario, app_permission_grants, granting
from bot.worker import build_worker
from catalog import Catalog, Kind, load_catalog
from catalog.words import counted

APPROVER = "U0AVERY"  # the second approver the demo plays (a requester never approves their own request)
SWEEP_SECONDS = 60


@dataclass(frozen=True)
class SampleTenant:
    domain: str
    name: str
    tenant_id: str
    state: str  # what the banner says of it


CONTOSO = SampleTenant("contoso.onmicrosoft.com", "Contoso", "2f0b3c7e-6d1a-4c55-9a3e-0c0a7d5b1a01", "ready")
FABRIKAM = SampleTenant("fabrikam.onmicrosoft.com", "Fabrikam", "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                        "blocked: permissions missing")
NORTHWIND = SampleTenant("northwind.onmicrosoft.com", "Northwind Traders", "a3bb189e-8bf9-4888-9912-ace4e6543002",
                         "granted as of v5, not v6; Security Administrator only eligible under PIM,\n"
                         f"{' ' * 31}Exchange Administrator held until 10 days from now")
SAMPLES = (CONTOSO, FABRIKAM, NORTHWIND)
#: What Fabrikam's admin never granted: application permissions, so consenting mends it.
FABRIKAM_MISSING = ("AuditLog.Read.All", "Policy.Read.All", "User.Read.All")
NORTHWIND_ELIGIBLE = "Security Administrator"
NORTHWIND_ENDING = "Exchange Administrator"  # a time-bound assignment: the check and a sweep say when it ends


def sample_cloud(catalog: Catalog) -> FakeMicrosoft:
    cloud = FakeMicrosoft(client_secret=secrets.token_urlsafe(24))
    latest = catalog.latest.version
    # What the ITDR app asks for statically, so the simulated admin consent grants the latest revision.
    cloud.consent_grants = app_permission_grants(catalog, latest)

    def sample(version: str, tenant: SampleTenant, without: tuple[str, ...] = ()) -> TenantScenario:
        return cloud.add_tenant(granting(catalog, version, tenant.tenant_id, domains=[tenant.domain],
                                         display_name=tenant.name, without=without))

    sample(latest, CONTOSO)
    sample(latest, FABRIKAM, FABRIKAM_MISSING)
    northwind = sample("v5", NORTHWIND)
    role = catalog.get(NORTHWIND_ELIGIBLE)
    if role is not None and role.ids.template_id:
        northwind.make_eligible_only(role.ids.template_id)
    ending = catalog.get(NORTHWIND_ENDING)
    if ending is not None and ending.ids.template_id:
        northwind.time_bound(ending.ids.template_id, datetime.now(UTC) + timedelta(days=10))
    return cloud


def banner(catalog: Catalog) -> str:
    tenants = "\n".join(f"  {s.domain:<28} {s.state}" for s in SAMPLES)
    return f"""itdr demo: NOTHING HERE IS REAL. Microsoft is simulated on 127.0.0.1, Slack is this terminal, Redis is
embedded and forgotten when you quit; nothing leaves this machine. The catalog is the real one
(latest revision {catalog.latest.version}).

Sample tenants:
{tenants}

Try:  check fabrikam.onmicrosoft.com         what is missing, why it matters, how to fix it
      fix fabrikam.onmicrosoft.com           the fix plan
      consent fabrikam.onmicrosoft.com       a consent request card; `as avery approve` approves it as Avery
                                             (an approver), `demo admin-consent fabrikam.onmicrosoft.com`
                                             plays the tenant admin granting it; the worker then verifies it
      watch contoso.onmicrosoft.com          this channel hears when Contoso loses or regains something
      demo revoke contoso.onmicrosoft.com User.Read.All   someone removes a permission (or a role)
      sweep                                  check every watched tenant now: drift is posted here
      why Mail.ReadWrite · diff v5 v6 · home · help · quit
Press a button by typing its number."""


OUTAGES = {
    "graph": "(simulated: Microsoft Graph now answers 429 Too Many Requests to everything; `demo outage off` ends it)",
    "exchange": "(simulated: Exchange's admin API now answers 500; `demo outage off` ends it)",
    "off": "(simulated: Microsoft answers normally again)",
}

DEMO_HELP = """Demo commands (nothing real):
  sweep                                    check every watched tenant now and post what changed
  demo revoke TENANT PERMISSION-OR-ROLE    an admin removes it from the ITDR app (Entra's audit records who)
  demo grant TENANT PERMISSION-OR-ROLE     an admin gives it back
  demo admin-consent TENANT                the tenant's admin opens the card's admin-consent link
  demo outage graph|exchange|off           Microsoft fails (Graph throttles, Exchange answers 500), or recovers
  as avery N|LABEL                         press a button (by number or label, e.g. `approve`) as Avery,
                                           an approver (you asked, so you cannot approve your own request)"""


class DemoSession:
    """The demo's own lines, and the worker it runs beside the console."""

    def __init__(self, cloud: FakeMicrosoft, runtime: Runtime, console: Console) -> None:
        self.cloud = cloud
        self.runtime = runtime
        self.console = console
        self.queue = queue_for(runtime.redis, runtime.settings)
        self.faults: list[Fault] = []

    async def handle(self, line: str) -> bool:
        words = line.split()
        if not words:
            return False
        command = words[0].lower()
        if " ".join(words).lower() in ("help", "/itdr help"):
            self.console.print(DEMO_HELP)
            return False  # the app's own help follows
        if command == "sweep" and len(words) == 1:
            await self.sweep()
        elif command == "as" and len(words) >= 3 and words[1].lower() == "avery":
            await self.console.press(" ".join(words[2:]), user=APPROVER)
        elif command == "demo":
            await self.demo(words[1:])
        else:
            return False
        return True

    async def demo(self, args: list[str]) -> None:
        action = args[0].lower() if args else ""
        if action in ("revoke", "grant") and len(args) >= 3:
            self.console.print(self.change(action, args[1], " ".join(args[2:])))
        elif action == "outage" and len(args) == 2 and args[1].lower() in OUTAGES:
            self.console.print(self.outage(args[1].lower()))
        elif action == "admin-consent" and len(args) == 2:
            self.console.print(await self.admin_consent(args[1]))
            # The worker's next look at approved requests verifies it and updates the card: show that.
            await self.console.collect(wait=self.runtime.settings.itdr_consent_poll_seconds + 3.0)
        else:
            self.console.print(DEMO_HELP)

    def tenant(self, name: str) -> TenantScenario | None:
        wanted = name.strip().lower()
        for scenario in self.cloud.tenants.values():
            if wanted in (scenario.tenant_id.lower(), scenario.display_name.lower(),
                          *(domain.lower() for domain in scenario.domains)):
                return scenario
        return None

    def change(self, action: str, tenant_name: str, item_name: str) -> str:
        scenario, found = self.tenant(tenant_name), self.runtime.catalog.lookup(item_name)
        item = found.item
        if scenario is None:
            return f"(no sample tenant {tenant_name}: {', '.join(s.domain for s in SAMPLES)})"
        if item is None:
            close = ", ".join(suggestion.name for suggestion in found.suggestions[:3])
            return f"(no catalog item `{item_name}`" + (f"; did you mean {close}?)" if close else ")")
        if item.kind not in (Kind.application_permission, Kind.directory_role):
            return (f"(`{item.name}` is a {item.kind.value.replace('_', ' ')}: the demo revokes application "
                    "permissions and directory roles)")
        admin = f"it-admin@{scenario.initial_domain}"
        if item.kind is Kind.application_permission and item.ids.resource_app_id and item.ids.application_id:
            pair = (item.ids.resource_app_id, item.ids.application_id)
            held = pair in scenario.app_role_assignments
            if action == "revoke" and held:
                scenario.revoke(pair[0], item.name, by=admin)
            elif action == "grant" and not held:
                scenario.app_role_assignments.append(pair)
        elif item.kind is Kind.directory_role and item.ids.template_id:
            held = item.ids.template_id in scenario.directory_roles
            if action == "revoke" and held:
                scenario.remove_role(item.ids.template_id, by=admin)
            elif action == "grant" and not held:
                scenario.directory_roles.append(item.ids.template_id)
        else:
            return f"(`{item.name}` has no Microsoft identifier to change)"
        if (action == "revoke") != held:
            state = "already holds" if held else "does not hold"
            return f"(simulated: {scenario.display_name} {state} {item.name})"
        verb = "removed" if action == "revoke" else "granted"
        return (f"(simulated: {admin} {verb} {item.name} {'from' if action == 'revoke' else 'to'} the ITDR app in "
                f"{scenario.display_name}; Entra's audit log records it. `sweep` or `check` to see it.)")

    def outage(self, kind: str) -> str:
        """Microsoft failing as it does: Graph throttled past every retry (429 with Retry-After) or Exchange's admin
        API answering 500; `off` ends it."""
        for fault in self.faults:
            self.cloud.faults.remove(fault)
        self.faults.clear()
        if kind == "graph":
            self.faults.append(self.cloud.throttle(r".*", retry_after=2, times=None))
        elif kind == "exchange":
            self.faults.append(self.cloud.fail(r"InvokeCommand", 500, service="exchange"))
        return OUTAGES[kind]

    async def admin_consent(self, tenant_name: str) -> str:
        """The tenant's Global Administrator opens the card's admin-consent link: a real GET of it, answered by the
        simulated cloud's `/adminconsent` as Microsoft's would (the app's permissions granted)."""
        scenario = self.tenant(tenant_name)
        if scenario is None:
            return f"(no sample tenant {tenant_name}: {', '.join(s.domain for s in SAMPLES)})"
        marker = f"/{scenario.tenant_id}/adminconsent"  # the link the card shows (built in bot.microsoft.tenant)
        link = next((url for url in reversed(self.console.links) if marker in url), None)
        if link is None:
            return (f"(no admin-consent link for {scenario.display_name} yet: `consent {scenario.initial_domain}`, "
                    "then `as avery approve`, shows one)")
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(self.cloud.ca_path)),
                                     trust_env=False) as client:
            answer = await client.get(link)
        if answer.status_code >= 400:
            return f"(simulated: Microsoft refused the link: {answer.text})"
        return (f"(simulated: {scenario.display_name}'s Global Administrator opened the link. Microsoft: "
                f"{answer.text} A worker verifies the approved request within "
                f"{self.runtime.settings.itdr_consent_poll_seconds} s; Verify now on the card does it at once.)")

    async def sweep(self) -> None:
        drift = self.runtime.drift
        if not await drift.tenant_ids():
            self.console.print("(no tenant is watched here yet: `watch contoso.onmicrosoft.com` first)")
            return
        start = await sweep_now(self.queue, drift.store, self.runtime.settings, now=datetime.now(UTC))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SWEEP_SECONDS
        while (progress := await drift.progress(start.id)) is None or not progress.delivered:
            if loop.time() > deadline:
                self.console.print("(the sweep is still running; its messages will show after your next command)")
                return
            await asyncio.sleep(0.2)
        unread = f", {progress.unknown} could not be read" if progress.unknown else ""
        self.console.print(f"(swept {progress.checked} of {counted(progress.tenants, 'watched tenant')}: "
                           f"{progress.changed} changed{unread})")
        await self.console.collect(quiet=True)


@contextlib.asynccontextmanager
async def demo_session(cloud: FakeMicrosoft, runtime: Runtime, console: Console) -> AsyncIterator[LineHandler]:
    """The worker runs beside the console (its posts reach the console's loopback Slack) until the demo ends."""
    session = DemoSession(cloud, runtime, console)
    worker = build_worker(runtime, session.queue, grace_seconds=0)
    task = asyncio.create_task(worker.start(), name="itdr-demo-worker")
    try:
        yield session.handle
    finally:
        await worker.stop()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """SAQ's shutdown notes and each retry of a simulated outage would interleave with the answers, which say it
    all; the levels are put back after (the demo also runs inside other programs: the tests)."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


async def run_demo(*, lines: Iterable[str] | None = None, out: TextIO | None = None,
                   stop: asyncio.Event | None = None) -> int:
    catalog = load_catalog()
    with _quiet("saq", "bot.microsoft"), sample_cloud(catalog) as cloud, cloud.trust_env():
        settings = cloud.settings(
            redis_url="",  # embedded, whatever REDIS_URL says: the demo never touches a real Redis
            redis_prefix=f"itdr-demo:{secrets.token_hex(4)}:",
            slack_bot_token=CONSOLE_TOKEN, slack_signing_secret="", slack_app_token="",
            itdr_approvers=f"{USER} {APPROVER}", itdr_state_secret=secrets.token_urlsafe(24),
            itdr_consent_poll_seconds=5, itdr_sweep_spread_seconds=0, itdr_sweep_cron="0 0 1 1 *",
            itdr_delivery_check_seconds=2, itdr_ops_channel="", itdr_home_tenant="", itdr_metrics_port="",
            itdr_client_certificate="", itdr_consent_redirect_uri="",
        )
        return await run_console(settings, lines=lines, out=out or sys.stdout, stop=stop, banner=banner(catalog),
                                 session=lambda runtime, console: demo_session(cloud, runtime, console))


async def _demo(stop: asyncio.Event) -> None:
    await run_demo(stop=stop)


def run() -> int:
    """`itdr demo` until `quit`, end of input, Ctrl-C or SIGTERM."""
    code = run_until_signalled(_demo)
    print(file=sys.stdout)
    return code
