"""`itdr fix`: a readiness report turned into ordered steps (who, how with the tenant's real ids, Microsoft's
documented wait), PIM-aware roles (eligible only, scoped to an administrative unit), and one idempotent PowerShell
script per plan, parsed with a real PowerShell grammar (tree-sitter-powershell) for every scenario."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis
import tree_sitter
import tree_sitter_powershell

from bot.microsoft import MicrosoftClients
from bot.readiness.fix import SOURCES, Plan, PlanRefused, script, step_done
from bot.readiness.model import CheckStatus, Report, Verdict
from bot.readiness.service import ReadinessService
from bot.store import Cache
from catalog import Kind, load_catalog
from tests.fakes.microsoft import FakeMicrosoft, SleepRecorder, TenantScenario, running_fake
from tests.test_readiness_check import complete_scenario, drop

catalog = load_catalog()
PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
EXCHANGE_ADMIN = "29232cdf-9323-42fd-ade2-1d097af3e4de"
SECURITY_ADMIN = "194ae4cb-b126-40b2-bd5b-6091b380977d"
BLOCKING_CA = {
    "id": "5f4c3a1e-0000-4000-8000-00000000ca01", "displayName": "Block everyone's 'legacy' sign-ins",
    "state": "enabled",
    "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}},
    "grantControls": {"builtInControls": ["block"]},
}


def _active(kind: Kind) -> str:
    return next(i.name for i in catalog.items_at("v6") if i.kind is kind and i.status.value == "active"
                and not i.cpv_only)


def _future(kind: Kind) -> str:
    return next(i.name for i in catalog.items_at("v6") if i.kind is kind and i.status.value == "future")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMicrosoft]:
    with running_fake() as fake:
        yield fake


@pytest.fixture
async def service(fake: FakeMicrosoft) -> AsyncIterator[ReadinessService]:
    fake.clear()
    settings = fake.settings()
    service = ReadinessService(settings, catalog, clients=MicrosoftClients(settings, sleep=SleepRecorder()))
    yield service
    await service.aclose()


def parse_clean(text: str) -> None:
    """Zero ERROR or MISSING nodes in PowerShell's grammar."""
    tree = PARSER.parse(text.encode())
    bad: list[str] = []

    def walk(node: tree_sitter.Node) -> None:
        if node.is_error or node.is_missing:
            bad.append(f"{node.type} at {node.start_point}: {text.encode()[node.start_byte:node.end_byte][:80]!r}")
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    assert not tree.root_node.has_error and not bad, bad


async def plan_for(service: ReadinessService, fake: FakeMicrosoft, scenario: TenantScenario,
                   version: str | None = None) -> tuple[Report, Plan]:
    fake.add_tenant(scenario)
    report, plan = await service.plan(service.request(scenario.tenant_id, version), fresh=True)
    text = script(plan, generated_at="2026-01-01T00:00:00+00:00")
    parse_clean(text)
    assert "[CmdletBinding(SupportsShouldProcess)]" in text
    assert scenario.tenant_id in text
    return report, plan


def ids(plan: Plan) -> list[str]:
    return [step.id for step in plan.steps]


def step(plan: Plan, step_id: str):  # type: ignore[no-untyped-def]
    return next(s for s in plan.steps if s.id == step_id)


def assert_ordered(plan: Plan) -> None:
    seen: set[str] = set()
    for s in plan.steps:
        assert set(s.after) <= seen, (s.id, s.after)
        seen.add(s.id)


async def test_a_ready_tenant_has_nothing_to_fix(fake: FakeMicrosoft, service: ReadinessService) -> None:
    scenario = complete_scenario()
    report, plan = await plan_for(service, fake, scenario)
    assert report.verdict is Verdict.ready and plan.steps == [] and plan.unread == []
    assert plan.nothing_to_fix == f"Nothing to fix: {scenario.domains[0]} grants everything v6 asks for"


async def test_missing_active_and_future_permissions_go_to_the_consent_workflow(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    active, future = _active(Kind.application_permission), _future(Kind.application_permission)
    scenario = drop(complete_scenario(), active, future)
    _, plan = await plan_for(service, fake, scenario)
    assert ids(plan) == ["consent"]
    consent = step(plan, "consent")
    assert consent.items == [active, future] or sorted(consent.items) == sorted([active, future])
    assert consent.action == "consent" and consent.who[0] == "Privileged Role Administrator"
    assert any(f"/itdr consent {scenario.tenant_id} v6" in c for c in consent.commands)
    assert any(f"/{scenario.tenant_id}/adminconsent?client_id=" in c for c in consent.commands)
    assert not any("New-MgServicePrincipalAppRoleAssignment" in c for c in consent.commands + consent.script)
    assert consent.wait_minutes is None and consent.wait_note.startswith("not documented")

    only_future = drop(complete_scenario(), future)
    report, plan = await plan_for(service, fake, only_future)
    assert report.verdict is Verdict.degraded and step(plan, "consent").items == [future]


async def test_missing_roles_get_assignments_with_the_tenants_ids(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = drop(complete_scenario(), "Exchange Administrator")
    report, plan = await plan_for(service, fake, scenario)
    assert ids(plan) == ["directory-roles"] and report.role_findings == {}
    roles = step(plan, "directory-roles")
    assert roles.who == ["Privileged Role Administrator"] and roles.after == []
    assert roles.commands[0] == (f"New-MgRoleManagementDirectoryRoleAssignment -PrincipalId {scenario.sp_id} "
                                 f"-RoleDefinitionId {EXCHANGE_ADMIN} -DirectoryScopeId '/'")
    body = json.loads(roles.commands[1].split(" ", 2)[2])
    assert roles.commands[1].startswith(f"POST {fake.url('graph')}/v1.0/roleManagement/directory/roleAssignments ")
    assert body["principalId"] == scenario.sp_id and body["roleDefinitionId"] == EXCHANGE_ADMIN
    assert body["directoryScopeId"] == "/"


async def test_an_eligible_only_role_is_its_own_finding_cold_and_warm(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = complete_scenario()
    scenario.make_eligible_only(EXCHANGE_ADMIN)
    report, plan = await plan_for(service, fake, scenario)  # cold: the role reads come in a second wave
    check = next(i for i in report.items if i.catalog_name == "Exchange Administrator")
    assert check.status is CheckStatus.failed
    assert check.detail.startswith("Eligible only (PIM): Huntress needs an active, permanent assignment")
    assert report.role_findings == {"Exchange Administrator": "eligible"}
    assert ids(plan) == ["roles-eligible-only"]
    assert f"-RoleDefinitionId {EXCHANGE_ADMIN} -DirectoryScopeId '/'" in step(plan, "roles-eligible-only").commands[0]

    eligible = fake.recorded("graph", path=r"roleEligibilitySchedules", in_batch=True)
    assert eligible and all(r.query.get("$filter") == f"principalId eq '{scenario.sp_id}'" for r in eligible)


async def test_a_warm_check_reads_role_management_in_its_single_batch(
    fake: FakeMicrosoft, redis_url: str, redis_prefix: str
) -> None:
    settings = fake.settings()
    client = aioredis.Redis.from_url(redis_url)
    service = ReadinessService(settings, catalog, cache=Cache(client, redis_prefix),
                               clients=MicrosoftClients(settings, sleep=SleepRecorder()))
    try:
        scenario = complete_scenario()
        scenario.make_eligible_only(EXCHANGE_ADMIN)
        fake.add_tenant(scenario)
        cold = await service.check(scenario.tenant_id, fresh=True)
        assert cold.waves == 4  # discovery, tokens, the batch, then the role reads once the app's id is known
        fake.clear()
        warm = await service.check(scenario.tenant_id, fresh=True)
        assert warm.role_findings == {"Exchange Administrator": "eligible"}
        assert warm.waves == 1 and len(fake.recorded("graph", path=r"\$batch")) == 1
        ready = fake.add_tenant(complete_scenario())
        assert (await service.check(ready.tenant_id, fresh=True)).waves == 3  # a ready tenant reads nothing more
    finally:
        await service.aclose()
        await client.aclose()


async def test_a_time_bound_role_is_made_permanent_before_it_ends(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    # A role missing too: this first (cold) check needs its second wave anyway, and reads the ends in it.
    scenario = drop(complete_scenario(), "Exchange Administrator")
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(days=9)
    scenario.time_bound(SECURITY_ADMIN, end)
    report, plan = await plan_for(service, fake, scenario)  # the script parses in PowerShell's grammar
    assert report.verdict is Verdict.blocked and report.role_ends == {"Security Administrator": end.isoformat()}
    assert ids(plan) == ["directory-roles", "roles-time-bound"]
    permanent = step(plan, "roles-time-bound")
    assert permanent.items == ["Security Administrator"] and permanent.who == ["Privileged Role Administrator"]
    assert permanent.wait_note == (f"none; do it before {end:%Y-%m-%d %H:%M} UTC, when the first of these "
                                   "assignments ends")
    powershell, graph = permanent.commands
    assert powershell.startswith("New-MgRoleManagementDirectoryRoleAssignmentScheduleRequest -BodyParameter @{"
                                 "action='adminUpdate'; " f"principalId='{scenario.sp_id}'; "
                                 f"roleDefinitionId='{SECURITY_ADMIN}'; directoryScopeId='/'")
    method, url, body = graph.split(" ", 2)
    assert (method, url) == ("POST", f"{fake.url('graph')}/v1.0/roleManagement/directory/"
                                     "roleAssignmentScheduleRequests")
    request = json.loads(body)
    assert request["action"] == "adminUpdate" and request["scheduleInfo"]["expiration"] == {"type": "noExpiration"}
    assert request["principalId"] == scenario.sp_id and request["directoryScopeId"] == "/"
    text = script(plan, generated_at="2026-01-01T00:00:00+00:00")
    assert "-not $_.EndDateTime" in text, "a role already permanent is left alone (idempotent)"
    assert step_done(permanent, report) is False, "held today, but the step is done only once it is permanent"
    scenario.role_ends.clear()  # an administrator made it permanent (Exchange Administrator still missing, so
    # this cold check reads the ends again in its second wave)
    again, _ = await service.plan(service.request(scenario.tenant_id), fresh=True)
    assert again.role_ends == {} and step_done(permanent, again) is True


async def test_a_role_scoped_to_an_administrative_unit_is_its_own_finding(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = complete_scenario()
    scope = scenario.scope_role(SECURITY_ADMIN)
    report, plan = await plan_for(service, fake, scenario)
    check = next(i for i in report.items if i.catalog_name == "Security Administrator")
    assert check.status is CheckStatus.failed and scope in check.detail
    assert report.role_findings == {"Security Administrator": scope}
    assert ids(plan) == ["roles-scoped"]
    assert step(plan, "roles-scoped").commands[0].endswith(f"-RoleDefinitionId {SECURITY_ADMIN} -DirectoryScopeId '/'")


async def test_exchange_steps_hydrate_first_and_carry_the_audit_logs_documented_wait(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    role = _active(Kind.role_group_role)
    scenario = complete_scenario(dehydrated=True, audit_log_ingestion=False)
    scenario.org_management_roles = [r for r in scenario.org_management_roles if r != role]
    _, plan = await plan_for(service, fake, scenario)
    assert ids(plan) == ["exchange-hydration", "exchange-audit-log", "exchange-role-group"]
    assert_ordered(plan)
    assert step(plan, "exchange-hydration").commands == ["Enable-OrganizationCustomization"]
    audit = step(plan, "exchange-audit-log")
    assert audit.after == ["exchange-hydration"] and audit.who == ["Exchange Administrator"]
    assert audit.commands == ["Set-AdminAuditLogConfig -UnifiedAuditLogIngestionEnabled $true"]
    assert (audit.wait_minutes, audit.wait_source) == (60, SOURCES["audit_log"])
    group = step(plan, "exchange-role-group")
    assert group.after == ["exchange-hydration"] and group.items == [role]
    assert group.commands == [f'New-ManagementRoleAssignment -SecurityGroup "Organization Management" -Role "{role}"']
    assert plan.longest_wait == 60


async def test_policies_and_licence_say_what_they_block_and_come_before_consent(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = drop(complete_scenario(p2_licence=False, security_defaults=True, ca_policies=[BLOCKING_CA]),
                    _active(Kind.application_permission))
    _, plan = await plan_for(service, fake, scenario)
    assert ids(plan) == ["conditional-access", "security-defaults", "consent", "licence-p2"]
    assert_ordered(plan)
    ca = step(plan, "conditional-access")
    assert ca.items == [BLOCKING_CA["displayName"]] and ca.who == ["Conditional Access Administrator"]
    assert any(str(BLOCKING_CA["id"]) in c for c in ca.commands)
    assert step(plan, "consent").after == ["conditional-access"]
    assert step(plan, "security-defaults").action == "security_defaults"
    assert step(plan, "licence-p2").action == "licence" and step(plan, "licence-p2").commands == []


async def test_an_app_not_in_the_tenant_consents_before_roles_are_assigned(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    _, plan = await plan_for(service, fake, complete_scenario(sp_exists=False))
    assert ids(plan)[:2] == ["consent", "directory-roles"]
    assert step(plan, "directory-roles").after == ["consent"]
    assert "creates its service principal" in step(plan, "consent").title


async def test_a_partly_read_tenant_gets_a_plan_for_what_was_read(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = drop(complete_scenario(), "Exchange Administrator")
    fake.fail(r"InvokeCommand", status=503, times=None, service="exchange")
    _, plan = await plan_for(service, fake, scenario)
    assert ids(plan) == ["directory-roles"]
    assert any(text.startswith("Unified audit log ingestion: Could not check") for text in plan.unread)


@pytest.mark.parametrize("fault", [
    lambda f: f.fail(r"\$batch", status=503, times=None),
])
async def test_never_a_plan_from_a_failed_read(
    fake: FakeMicrosoft, service: ReadinessService, fault: Callable[[FakeMicrosoft], object]
) -> None:
    scenario = fake.add_tenant(complete_scenario(audit_log_ingestion=False))
    fault(fake)
    with pytest.raises(PlanRefused) as refused:
        await service.plan(service.request(scenario.tenant_id), fresh=True)
    # Callers say "Could not check TENANT: …" themselves: the reason is not prefixed a second time.
    assert str(refused.value).startswith("Graph answered 503"), str(refused.value)


def test_itdr_fix_command_line(
    fake: FakeMicrosoft, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    fake.clear()
    settings = fake.settings()
    for name in ("itdr_client_id", "itdr_target_app_id", "itdr_authority_host", "itdr_graph_url",
                 "itdr_exchange_url"):
        monkeypatch.setenv(name.upper(), str(getattr(settings, name)))
    monkeypatch.setenv("ITDR_CLIENT_SECRET", settings.itdr_client_secret.get_secret_value())  # type: ignore[union-attr]
    monkeypatch.delenv("REDIS_URL", raising=False)
    ready = fake.add_tenant(complete_scenario())
    blocked = fake.add_tenant(drop(complete_scenario(audit_log_ingestion=False), "Exchange Administrator"))

    assert main(["fix", ready.tenant_id, "--version", "v5"]) == 0
    assert capsys.readouterr().out.strip() == f"Nothing to fix: {ready.domains[0]} grants everything v5 asks for"

    assert main(["fix", blocked.tenant_id, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"tenant", "version", "verdict", "checked_at", "steps"}
    assert data["tenant"] == blocked.tenant_id and data["verdict"] == "blocked"
    assert [s["id"] for s in data["steps"]] == ["directory-roles", "exchange-audit-log"]
    for s in data["steps"]:
        assert set(s) >= {"id", "title", "items", "who", "action", "commands", "portal", "wait_minutes",
                          "wait_source", "after"}

    assert main(["fix", blocked.domains[0], "--script"]) == 0
    text = capsys.readouterr().out
    parse_clean(text)
    assert blocked.sp_id in text and EXCHANGE_ADMIN in text and "ShouldProcess" in text
    assert "secret" not in text.lower().replace("no secret is stored", "")

    assert main(["fix", blocked.domains[0]]) == 1
    out = capsys.readouterr().out
    assert "1. Assign the missing Entra roles" in out and "60 minutes" in out

    assert main(["fix", "x' or 1 eq 1"]) == 2
    assert "doesn't look like a Microsoft 365 tenant" in capsys.readouterr().err
    assert main(["fix", ready.tenant_id, "--version", "v9"]) == 2
    capsys.readouterr()
    unknown = "nobody.onmicrosoft.com"
    assert main(["fix", unknown]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"itdr: could not check {unknown}: ")


async def test_unreadable_eligibility_leaves_the_role_plainly_missing(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = complete_scenario()
    scenario.make_eligible_only(EXCHANGE_ADMIN)
    fake.fail_in_batch(r"roleEligibilitySchedules", status=403, retry_after=None, times=None)
    report, plan = await plan_for(service, fake, scenario)
    assert report.verdict is Verdict.blocked and report.role_findings == {}
    assert report.retry_after is None, "an explanatory read never reschedules a sweep"
    assert ids(plan) == ["directory-roles"]
