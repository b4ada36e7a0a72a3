"""The readiness check end to end against a local fake of Microsoft speaking the real protocols (HTTPS, msal,
Graph $batch, Exchange InvokeCommand): what an engineer is told for each kind of tenant and each fault."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from bot.microsoft import InvalidTenant, MicrosoftClients
from bot.readiness.model import CheckStatus, Report, Verdict
from bot.readiness.service import ReadinessService
from bot.store import Cache
from bot.terminal import render_report
from catalog import Kind, load_catalog
from tests.fakes.microsoft import FakeMicrosoft, SleepRecorder, TenantScenario, granting, running_fake

catalog = load_catalog()


def complete_scenario(version: str = "v6", **overrides: object) -> TenantScenario:
    """A tenant that grants the ITDR app every non-CPV permission and role of a revision."""
    scenario = granting(catalog, version, str(uuid.uuid4()), domains=[f"t{uuid.uuid4().hex[:8]}.onmicrosoft.com"])
    for key, value in overrides.items():
        setattr(scenario, key, value)
    return scenario


def drop(scenario: TenantScenario, *names: str) -> TenantScenario:
    items = [catalog.get(name) for name in names]
    ids = {(i.ids.resource_app_id, i.ids.application_id) for i in items if i}
    scenario.app_role_assignments = [pair for pair in scenario.app_role_assignments if pair not in ids]
    templates = {i.ids.template_id for i in items if i}
    scenario.directory_roles = [role for role in scenario.directory_roles if role not in templates]
    return scenario


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMicrosoft]:
    with running_fake() as fake:
        yield fake


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
async def service(fake: FakeMicrosoft, sleeps: SleepRecorder) -> AsyncIterator[ReadinessService]:
    fake.clear()
    fake.page_size = None
    settings = fake.settings()
    service = ReadinessService(settings, catalog, clients=MicrosoftClients(settings, sleep=sleeps))
    yield service
    await service.aclose()


def item(report: Report, name: str):  # type: ignore[no-untyped-def]
    return next(i for i in report.items if i.catalog_name == name or i.id == name)


@pytest.fixture
async def cached_service(fake: FakeMicrosoft, sleeps: SleepRecorder, redis_url: str,
                         redis_prefix: str) -> AsyncIterator[ReadinessService]:
    """The service as `itdr serve` and the worker run it: with the Redis cache (the app's object id per tenant)."""
    fake.clear()
    fake.page_size = None
    settings = fake.settings()
    client = aioredis.Redis.from_url(redis_url)
    service = ReadinessService(settings, catalog, cache=Cache(client, redis_prefix),
                               clients=MicrosoftClients(settings, sleep=sleeps))
    yield service
    await service.aclose()
    await client.aclose()


async def test_a_fully_granted_tenant_is_ready_in_three_waves_cold(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = fake.add_tenant(complete_scenario())
    report = await service.check(scenario.tenant_id)
    assert report.verdict is Verdict.ready, [i for i in report.items if i.status is not CheckStatus.passed][:3]
    assert report.satisfied_version == "v6"
    assert report.tenant.name == "Contoso" and report.tenant.domain == scenario.domains[0]
    assert report.waves == 3  # discovery, tokens, one Graph batch beside the Exchange cmdlets
    assert report.round_trips == fake.round_trips()
    assert len(fake.recorded("graph", path=r"\$batch")) == 1


async def test_warm_check_costs_one_wave(
    fake: FakeMicrosoft, cached_service: ReadinessService
) -> None:
    scenario = fake.add_tenant(complete_scenario())
    await cached_service.check(scenario.tenant_id)
    fake.clear()
    report = await cached_service.check(scenario.tenant_id, fresh=True)
    assert report.verdict is Verdict.ready
    assert len(fake.recorded("graph", path=r"\$batch")) == 1
    assert report.waves == 1
    assert fake.token_requests() == []  # tokens came from msal's cache


async def test_a_role_held_until_a_date_passes_today_and_says_when_it_ends(
    fake: FakeMicrosoft, cached_service: ReadinessService
) -> None:
    scenario = complete_scenario()
    security_admin = catalog.get("Security Administrator")
    assert security_admin is not None and security_admin.ids.template_id
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=12)
    scenario.time_bound(security_admin.ids.template_id, end)
    fake.add_tenant(scenario)
    first = await cached_service.check(scenario.tenant_id)
    # A ready tenant's first check keeps its three waves: the ends need the app's object id, which the next
    # check has cached (a first check that needs a second wave anyway reads them in it).
    assert first.waves == 3 and first.role_ends == {}
    for _ in range(2):  # every later check: in its one batch
        report = await cached_service.check(scenario.tenant_id, fresh=True)
        assert report.waves == 1
        assert report.verdict is Verdict.ready  # nothing is missing today
        assert report.role_ends == {"Security Administrator": end.isoformat()}
        held = item(report, "Security Administrator")
        assert held.status is CheckStatus.passed
        assert held.detail == (f"Held until {end:%Y-%m-%d %H:%M} UTC, through a time-bound assignment: Huntress "
                               "loses it then unless the assignment is made permanent.")
    ends = fake.recorded("graph", path=r"roleAssignmentScheduleInstances", in_batch=True)
    assert ends and all(r.query.get("$filter") == f"principalId eq '{scenario.sp_id}'" for r in ends)
    text = render_report(report)
    assert "! ends" in text and f"Security Administrator: held until {end:%Y-%m-%d %H:%M} UTC" in text

    scenario.role_ends[security_admin.ids.template_id] = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    lapsed = await cached_service.check(scenario.tenant_id, fresh=True)  # Entra removed the expired assignment
    assert lapsed.verdict is Verdict.blocked and lapsed.role_ends == {}
    assert item(lapsed, "Security Administrator").status is CheckStatus.failed


def test_role_ends_are_read_as_microsoft_writes_them() -> None:
    """Instances shaped as the response sample of
    https://learn.microsoft.com/graph/api/rbacapplication-list-roleassignmentscheduleinstances (v1.0): a
    permanent assignment has "endDateTime": null; the latest end of a role's time-bound ones counts; a role also
    held permanently, or only at a narrower scope, never ends; an end that cannot be read is not "permanent"."""
    from bot.microsoft.graph import SubResponse
    from bot.readiness.collect import Collector

    def instance(role: str, end: str | None, scope: str = "/") -> dict[str, object]:
        return {"id": f"lAPpYvVpN0KRkAEhdxReEA-{role[:4]}", "principalId": "6be4b305-b75e-4efc-bfcc-31bd3b53a5f8",
                "roleDefinitionId": role, "directoryScopeId": scope, "appScopeId": None,
                "startDateTime": None, "endDateTime": end, "assignmentType": "Assigned", "memberType": "Direct"}

    body = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#roleManagement/directory/"
                              "roleAssignmentScheduleInstances",
            "value": [instance("aaaa", "2026-12-20T14:00:00Z"), instance("aaaa", "2027-01-02T08:30:00.1234567Z"),
                      instance("bbbb", "2026-12-20T14:00:00Z"), instance("bbbb", None),
                      instance("cccc", "2026-12-07T00:00:00Z", scope="/administrativeUnits/x"),
                      instance("dddd", None), instance("eeee", "not a date")]}
    reading = Collector._role_ends(SubResponse(id="ends", status=200, body=body))
    assert reading.known and reading.value == {"aaaa": dt.datetime(2027, 1, 2, 8, 30, 0, 123456, tzinfo=dt.UTC)}
    refused = Collector._role_ends(SubResponse(id="ends", status=403, body={"error": {
        "code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}}))
    assert not refused.known and "403" in (refused.error or "")


async def test_a_domain_is_accepted_and_resolved(fake: FakeMicrosoft, service: ReadinessService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    report = await service.check(scenario.domains[0].upper())
    assert report.verdict is Verdict.ready
    assert report.tenant.id == scenario.tenant_id


async def test_a_tenant_without_the_app_is_blocked_with_the_consent_link(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = fake.add_tenant(complete_scenario(sp_exists=False))
    report = await service.check(scenario.tenant_id)
    assert report.verdict is Verdict.blocked
    first = report.items[0]
    assert first.status is CheckStatus.failed
    assert f"{fake.authority_host}/{scenario.tenant_id}/adminconsent?client_id=" in (first.remediation or "")
    assert report.satisfied_version is None


async def test_missing_active_and_future_permissions(fake: FakeMicrosoft, service: ReadinessService) -> None:
    scenario = fake.add_tenant(drop(complete_scenario(), "Mail.ReadWrite"))
    report = await service.check(scenario.tenant_id)
    assert report.verdict is Verdict.degraded
    assert item(report, "Mail.ReadWrite").status is CheckStatus.warn
    scenario = fake.add_tenant(drop(complete_scenario(), "ActivityFeed.Read", "Mail.ReadWrite"))
    report = await service.check(scenario.tenant_id)
    assert report.verdict is Verdict.blocked
    assert report.missing["o365_management"] == ["ActivityFeed.Read"]
    assert report.missing["graph"] == ["Mail.ReadWrite"]
    assert "Log and event ingest" in (item(report, "ActivityFeed.Read").why or "")


async def test_a_tenant_one_revision_behind(fake: FakeMicrosoft, service: ReadinessService) -> None:
    scenario = fake.add_tenant(complete_scenario("v5"))
    report = await service.check(scenario.tenant_id)
    assert report.satisfied_version == "v5"
    assert report.missing["graph"] == ["AppRoleAssignment.ReadWrite.All"]
    older = await service.check(scenario.tenant_id, "v5")
    assert older.verdict is Verdict.ready and older.catalog_version == "v5"


async def test_missing_roles(fake: FakeMicrosoft, service: ReadinessService) -> None:
    scenario = drop(complete_scenario(), "Organizational Branding Administrator")
    scenario.org_management_roles = ["Audit Logs", "Mail Recipients", "Organization Configuration", "Role Management"]
    fake.add_tenant(scenario)
    report = await service.check(scenario.tenant_id)
    assert report.verdict is Verdict.blocked
    assert report.missing["entra_role"] == ["Organizational Branding Administrator"]
    assert report.missing["exchange_role_group"] == ["Transport Rules"]


@pytest.mark.parametrize(
    ("overrides", "check_id", "verdict"),
    [
        ({"audit_log_ingestion": False}, "exchange.audit_log", Verdict.blocked),
        ({"dehydrated": True}, "exchange.hydration", Verdict.blocked),
        ({"p2_licence": False}, "licence.p2", Verdict.degraded),
    ],
)
async def test_tenant_prerequisites(
    fake: FakeMicrosoft, service: ReadinessService, overrides: dict[str, object], check_id: str, verdict: Verdict
) -> None:
    scenario = fake.add_tenant(complete_scenario(**overrides))
    report = await service.check(scenario.tenant_id)
    assert report.verdict is verdict
    assert item(report, check_id).status in (CheckStatus.failed, CheckStatus.warn)
    assert item(report, check_id).remediation


async def test_throttling_is_retried_after_retry_after(
    fake: FakeMicrosoft, service: ReadinessService, sleeps: SleepRecorder
) -> None:
    scenario = fake.add_tenant(complete_scenario())
    fake.throttle(r"memberOf", retry_after=7, in_batch=True, service="graph")
    report = await service.check(scenario.tenant_id)
    assert report.verdict is Verdict.ready
    assert 7 in sleeps.calls


async def test_a_persistent_503_is_an_honest_unknown_not_ready(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = fake.add_tenant(complete_scenario())
    fake.fail(r"appRoleAssignments", status=503, times=None, in_batch=True, service="graph")
    try:
        report = await service.check(scenario.tenant_id)
    finally:
        fake.faults.clear()
    assert report.verdict is Verdict.unknown
    assert "503" in item(report, "AuditLog.Read.All").detail


async def test_exchange_down_is_unknown(fake: FakeMicrosoft, service: ReadinessService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    fake.fail(r"InvokeCommand", status=503, times=None, service="exchange")
    try:
        report = await service.check(scenario.tenant_id)
    finally:
        fake.faults.clear()
    assert report.verdict is Verdict.unknown
    assert item(report, "exchange.audit_log").status is CheckStatus.unknown


async def test_a_failed_sub_request_only_affects_its_checks(fake: FakeMicrosoft, service: ReadinessService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    fake.fail_in_batch(r"conditionalAccess", status=403)
    try:
        report = await service.check(scenario.tenant_id)
    finally:
        fake.faults.clear()
    assert report.verdict is Verdict.unknown
    assert item(report, "policy.conditional_access").status is CheckStatus.unknown
    assert item(report, "AuditLog.Read.All").status is CheckStatus.passed


async def test_paged_grants_are_followed(fake: FakeMicrosoft, service: ReadinessService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    fake.page_size = 10
    report = await service.check(scenario.tenant_id)
    assert report.verdict is Verdict.ready
    assert any("skiptoken" in (r.query or {}).get("$skiptoken", "skiptoken") for r in fake.recorded("graph"))


async def test_a_bad_secret_is_reported_as_our_problem(fake: FakeMicrosoft, sleeps: SleepRecorder) -> None:
    scenario = fake.add_tenant(complete_scenario())
    settings = fake.settings(itdr_client_secret="wrong-secret")
    service = ReadinessService(settings, catalog, clients=MicrosoftClients(settings, sleep=sleeps))
    try:
        report = await service.check(scenario.tenant_id)
    finally:
        await service.aclose()
    assert report.verdict is Verdict.unknown
    assert "client secret" in report.items[0].detail
    assert "wrong-secret" not in json.dumps(report.to_json())


async def test_an_unknown_tenant_says_so(service: ReadinessService) -> None:
    report = await service.check("nosuchtenant.onmicrosoft.com")
    assert report.verdict is Verdict.unknown
    assert "does not know the tenant" in report.items[0].detail


@pytest.mark.parametrize("text", ["x' or 1 eq 1", "../../etc", "contoso.com/evil", "a b", "<script>"])
async def test_a_malicious_tenant_string_is_refused_before_any_request(
    fake: FakeMicrosoft, service: ReadinessService, text: str
) -> None:
    with pytest.raises(InvalidTenant):
        await service.check(text)
    assert fake.round_trips() == 0


async def test_a_tenant_refusing_alternate_key_navigation_still_gets_an_answer(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = fake.add_tenant(complete_scenario())
    fake.fail_in_batch(r"appId='[^']*'\)/appRoleAssignments", status=400, retry_after=None)
    try:
        report = await service.check(scenario.tenant_id)
    finally:
        fake.faults.clear()
    assert report.verdict is Verdict.ready
    assert len(fake.recorded("graph", path=r"\$batch")) == 2  # the second batch asks by object id


async def test_cpv_mode_checks_delegated_grants_by_name(fake: FakeMicrosoft, sleeps: SleepRecorder) -> None:
    from tests.fakes.microsoft import EXCHANGE_APP_ID, GRAPH_APP_ID, PARTNER_CENTER_APP_ID

    cpv_items = [i for i in catalog.current_items if i.cpv_only and i.kind is Kind.application_permission]
    scenario = complete_scenario()
    scenario.app_role_assignments += [(i.ids.resource_app_id, i.ids.application_id) for i in cpv_items]  # type: ignore[misc]
    scenario.delegated_grants = [(GRAPH_APP_ID, "Directory.AccessAsUser.All User.Read"),
                                 (PARTNER_CENTER_APP_ID, "user_impersonation")]
    fake.add_tenant(scenario)
    settings = fake.settings(itdr_cpv_mode=True)
    service = ReadinessService(settings, catalog, clients=MicrosoftClients(settings, sleep=sleeps))
    try:
        report = await service.check(scenario.tenant_id)
        assert report.verdict is Verdict.blocked
        assert report.missing["exchange"] == ["Exchange.Manage"]
        assert item(report, "user_impersonation").status is CheckStatus.passed
        assert item(report, "Directory.AccessAsUser.All").status is CheckStatus.passed
        scenario.delegated_grants.append((EXCHANGE_APP_ID, "Exchange.Manage"))
        again = await service.check(scenario.tenant_id, fresh=True)
        assert again.verdict is Verdict.ready
    finally:
        await service.aclose()


def test_itdr_check_command_line_exit_codes_and_json(
    fake: FakeMicrosoft, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    settings = fake.settings()
    for name in ("itdr_client_id", "itdr_target_app_id", "itdr_authority_host", "itdr_graph_url",
                 "itdr_exchange_url"):
        monkeypatch.setenv(name.upper(), str(getattr(settings, name)))
    monkeypatch.setenv("ITDR_CLIENT_SECRET", settings.itdr_client_secret.get_secret_value())  # type: ignore[union-attr]
    monkeypatch.delenv("REDIS_URL", raising=False)
    ready = fake.add_tenant(complete_scenario())
    blocked = fake.add_tenant(complete_scenario(audit_log_ingestion=False))

    assert main(["check", ready.tenant_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"tenant", "catalog_version", "satisfied_version", "verdict", "items", "missing",
                         "round_trips", "duration_ms"}
    assert data["verdict"] == "ready" and data["tenant"]["id"] == ready.tenant_id

    assert main(["check", blocked.domains[0]]) == 1
    out = capsys.readouterr().out
    assert "BLOCKED" in out.splitlines()[1]
    assert "Set-AdminAuditLogConfig -UnifiedAuditLogIngestionEnabled $true" in out

    assert main(["check", "x' or 1 eq 1"]) == 2
    assert "doesn't look like a Microsoft 365 tenant" in capsys.readouterr().err


async def test_a_grant_under_the_v2_revisions_name_counts_and_says_so(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    from tests.fakes.microsoft import GRAPH_APP_ID

    scenario = drop(complete_scenario(), "IdentityRiskyUser.Read.All")
    scenario.grant_all(GRAPH_APP_ID, "IdentityRiskyUser.ReadWrite.All")
    fake.add_tenant(scenario)
    report = await service.check(scenario.tenant_id)
    assert report.verdict is Verdict.ready
    risky = item(report, "IdentityRiskyUser.Read.All")
    assert risky.status is CheckStatus.passed
    assert risky.detail.startswith("Granted as IdentityRiskyUser.ReadWrite.All")
    assert report.satisfied_version == "v6"


async def test_results_are_cached_in_redis_and_redis_down_still_checks_live(
    fake: FakeMicrosoft, sleeps: SleepRecorder, redis_url: str, redis_prefix: str
) -> None:
    from bot.store import RedisConnections

    scenario = fake.add_tenant(complete_scenario())
    settings = fake.settings()
    store = RedisConnections(redis_url, redis_prefix)
    clients = MicrosoftClients(settings, sleep=sleeps)
    service = ReadinessService(settings, catalog, cache=store.cache, clients=clients)
    try:
        first = await service.check(scenario.tenant_id)
        before = fake.round_trips()
        cached = await service.check(scenario.tenant_id)
        assert cached.cached and cached.verdict is Verdict.ready and fake.round_trips() == before
        fresh = await service.check(scenario.tenant_id, fresh=True)
        assert not fresh.cached and fake.round_trips() > before
        assert first.verdict is Verdict.ready
    finally:
        await service.aclose()
        await store.aclose()

    down = RedisConnections("redis://127.0.0.1:1", redis_prefix)  # nothing listens there
    clients = MicrosoftClients(settings, sleep=sleeps)
    service = ReadinessService(settings, catalog, cache=down.cache, clients=clients)
    try:
        report = await service.check(scenario.tenant_id)
        assert report.verdict is Verdict.ready and not report.cached
    finally:
        await service.aclose()
        await down.aclose()


async def test_throttling_past_the_retries_reaches_the_caller_with_retry_after(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    scenario = fake.add_tenant(complete_scenario())
    await service.check(scenario.tenant_id)  # warm: tokens cached
    fake.throttle(r"/\$batch", retry_after=300, times=10)  # longer than a worker should sleep through
    report = await service.check(scenario.tenant_id, fresh=True)
    assert report.verdict is Verdict.unknown  # an engineer is told the truth: not checked
    assert report.retry_after == 300  # a background job can reschedule the tenant instead
    assert "429" in (report.common_failure or "") or "Please retry" in (report.common_failure or "")


async def test_waves_and_round_trips_are_counted_per_check_under_concurrency(
    fake: FakeMicrosoft, service: ReadinessService
) -> None:
    tenants = [fake.add_tenant(complete_scenario()) for _ in range(4)]
    reports = await asyncio.gather(*(service.check(t.tenant_id) for t in tenants))
    assert [r.waves for r in reports] == [3, 3, 3, 3]  # each cold check: discovery, tokens, one batch wave
    assert sum(r.round_trips for r in reports) == fake.round_trips()
    assert len({r.round_trips for r in reports}) == 1, "every check counts only its own requests"


async def test_sweeps_ask_graph_for_low_priority(fake: FakeMicrosoft, service: ReadinessService) -> None:
    from bot.microsoft.http import Priority

    scenario = fake.add_tenant(complete_scenario())
    await service.check(scenario.tenant_id, priority=Priority.LOW)
    await service.check(scenario.tenant_id, fresh=True)
    priorities = [r.headers.get("x-ms-throttle-priority") for r in fake.recorded("graph", path=r"\$batch")]
    assert priorities == ["low", "high"]


async def test_a_login_host_that_never_answers_is_bounded_by_one_deadline(fake: FakeMicrosoft) -> None:
    import socket
    import time

    from bot import terminal

    silent = socket.socket()  # accepts connections (the kernel completes the handshake) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    host = f"https://127.0.0.1:{silent.getsockname()[1]}"
    settings = fake.settings(itdr_authority_host=host, itdr_check_deadline_seconds=1.5,
                             itdr_http_timeout_seconds=4)
    service = ReadinessService(settings, catalog)
    try:
        started = time.monotonic()
        report = await service.check(str(uuid.uuid4()))
        elapsed = time.monotonic() - started
    finally:
        await service.aclose()
        silent.close()
    assert elapsed < 3, f"the check took {elapsed:.1f}s"
    assert report.verdict is Verdict.unknown
    assert "did not answer within 1.5 s" in (report.common_failure or "")
    text = terminal.render_report(report)
    assert text.count("did not answer within") == 1, "one headline, not one line per item"
