"""The verdict rules, on snapshots built by hand: what a tenant lacks decides what the engineer is told."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.readiness.evaluate import Remedies, evaluate
from bot.readiness.model import (
    CheckStatus,
    ConditionalAccessPolicy,
    Reading,
    ServicePrincipal,
    TenantInfo,
    TenantSnapshot,
    Verdict,
)
from catalog import Catalog, Kind, load_catalog

TENANT = "3f2c8a63-2a1b-4c2e-9f64-2b9f0c6c1a11"
APP_ID = "e1b4a2c3-0000-4000-8000-00000000abcd"
catalog: Catalog = load_catalog()
remedies = Remedies("https://login.microsoftonline.com", APP_ID)


def full_snapshot(version: str = "v6") -> TenantSnapshot:
    """A tenant that grants every non-CPV item of a revision."""
    items = [item for item in catalog.items_at(version) if not item.cpv_only]
    return TenantSnapshot(
        tenant=TenantInfo(id=TENANT, domain="contoso.onmicrosoft.com", name="Contoso"),
        service_principal=Reading(ServicePrincipal("sp-1", APP_ID, "Huntress Security Platform (Direct)", True)),
        app_roles=Reading(frozenset((i.ids.resource_app_id, i.ids.application_id) for i in items
                                    if i.kind is Kind.application_permission)),
        delegated_scopes=Reading({}),
        directory_roles=Reading(frozenset(i.ids.template_id for i in items if i.kind is Kind.directory_role)),
        p2_licensed=Reading(True),
        conditional_access=Reading([]),
        security_defaults=Reading(False),
        audit_log_enabled=Reading(True),
        dehydrated=Reading(False),
        org_management_roles=Reading(frozenset(i.name for i in items if i.kind is Kind.role_group_role)),
    )


def without(snapshot: TenantSnapshot, *names: str) -> TenantSnapshot:
    drop = [catalog.get(name) for name in names]
    assert all(drop)
    app_roles = snapshot.app_roles.value - {(i.ids.resource_app_id, i.ids.application_id) for i in drop}  # type: ignore[union-attr,operator]
    roles = snapshot.directory_roles.value - {i.ids.template_id for i in drop}  # type: ignore[union-attr,operator]
    org = snapshot.org_management_roles.value - {i.name for i in drop}  # type: ignore[union-attr,operator]
    return replace(snapshot, app_roles=Reading(app_roles), directory_roles=Reading(roles),
                   org_management_roles=Reading(org))


def status_of(report_items: list, name: str) -> CheckStatus:  # type: ignore[type-arg]
    return next(item.status for item in report_items if item.catalog_name == name)


def test_a_tenant_granting_everything_is_ready() -> None:
    report = evaluate(full_snapshot(), catalog, "v6", remedies)
    assert report.verdict is Verdict.ready
    assert report.satisfied_version == "v6"
    assert all(item.status in (CheckStatus.passed, CheckStatus.not_applicable) for item in report.items)
    assert not any(report.missing.values())


def test_cpv_items_are_not_applicable_unless_cpv_mode() -> None:
    report = evaluate(full_snapshot(), catalog, "v6", remedies)
    not_applicable = {item.catalog_name for item in report.items if item.status is CheckStatus.not_applicable}
    assert not_applicable == {item.name for item in catalog.current_items if item.cpv_only}
    cpv = evaluate(full_snapshot(), catalog, "v6", remedies, cpv_mode=True)
    assert cpv.verdict is Verdict.blocked  # CPV mode: the delegated grants are really missing now
    assert status_of(cpv.items, "user_impersonation") is CheckStatus.failed


def test_missing_app_blocks_with_the_consent_link() -> None:
    snapshot = replace(full_snapshot(), service_principal=Reading(None))
    report = evaluate(snapshot, catalog, "v6", remedies)
    assert report.verdict is Verdict.blocked
    first = report.items[0]
    assert first.id == "service_principal" and first.status is CheckStatus.failed
    assert f"https://login.microsoftonline.com/{TENANT}/adminconsent?client_id={APP_ID}" in (first.remediation or "")
    assert "AuditLog.Read.All" in report.missing["graph"]
    assert report.satisfied_version is None


def test_a_disabled_app_blocks() -> None:
    sp = ServicePrincipal("sp-1", APP_ID, "Huntress", enabled=False)
    report = evaluate(replace(full_snapshot(), service_principal=Reading(sp)), catalog, "v6", remedies)
    assert report.verdict is Verdict.blocked
    assert "disabled" in report.items[0].detail
    assert report.satisfied_version is None, "a disabled app satisfies no revision, whatever it was granted"


def test_missing_active_permission_blocks_and_says_what_breaks() -> None:
    report = evaluate(without(full_snapshot(), "AuditLog.Read.All"), catalog, "v6", remedies)
    assert report.verdict is Verdict.blocked
    item = next(i for i in report.items if i.catalog_name == "AuditLog.Read.All")
    assert item.status is CheckStatus.failed
    assert item.why and item.why.startswith("Log and event ingest")
    assert "adminconsent" in (item.remediation or "")
    assert report.missing["graph"] == ["AuditLog.Read.All"]


def test_missing_future_permission_only_degrades() -> None:
    report = evaluate(without(full_snapshot(), "Mail.ReadWrite"), catalog, "v6", remedies)
    assert report.verdict is Verdict.degraded
    assert status_of(report.items, "Mail.ReadWrite") is CheckStatus.warn
    assert report.missing["graph"] == ["Mail.ReadWrite"]


def test_a_tenant_one_revision_behind() -> None:
    report = evaluate(full_snapshot("v5"), catalog, "v6", remedies)
    assert report.satisfied_version == "v5"
    assert report.verdict is Verdict.blocked  # AppRoleAssignment.ReadWrite.All is active and missing
    assert report.missing["graph"] == ["AppRoleAssignment.ReadWrite.All"]
    assert evaluate(full_snapshot("v5"), catalog, "v5", remedies).verdict is Verdict.ready


def test_missing_roles_block_with_the_assignment_command() -> None:
    report = evaluate(without(full_snapshot(), "Exchange Administrator", "Transport Rules"), catalog, "v6", remedies)
    assert report.verdict is Verdict.blocked
    assert report.missing["entra_role"] == ["Exchange Administrator"]
    assert report.missing["exchange_role_group"] == ["Transport Rules"]
    role = next(i for i in report.items if i.catalog_name == "Exchange Administrator")
    assert "New-MgRoleManagementDirectoryRoleAssignment -PrincipalId sp-1" in (role.remediation or "")
    assert "29232cdf-9323-42fd-ade2-1d097af3e4de" in (role.remediation or "")
    group = next(i for i in report.items if i.catalog_name == "Transport Rules")
    assert 'New-ManagementRoleAssignment -SecurityGroup "Organization Management" -Role "Transport Rules"' in (
        group.remediation or "")


def test_a_missing_future_role_only_degrades() -> None:
    report = evaluate(without(full_snapshot(), "Teams Administrator"), catalog, "v6", remedies)
    assert report.verdict is Verdict.degraded


@pytest.mark.parametrize(
    ("field", "value", "check_id"),
    [("audit_log_enabled", False, "exchange.audit_log"), ("dehydrated", True, "exchange.hydration")],
)
def test_exchange_prerequisites_block(field: str, value: bool, check_id: str) -> None:
    report = evaluate(replace(full_snapshot(), **{field: Reading(value)}), catalog, "v6", remedies)
    assert report.verdict is Verdict.blocked
    item = next(i for i in report.items if i.id == check_id)
    assert item.status is CheckStatus.failed and item.remediation


def test_no_p2_degrades_and_names_the_p2_items() -> None:
    report = evaluate(replace(full_snapshot(), p2_licensed=Reading(False)), catalog, "v6", remedies)
    assert report.verdict is Verdict.degraded
    item = next(i for i in report.items if i.id == "licence.p2")
    assert item.status is CheckStatus.warn and "IdentityRiskyUser.Read.All" in (item.why or "")


def test_blocking_conditional_access_is_a_named_warning() -> None:
    policy = ConditionalAccessPolicy("p1", "Block legacy everything", "enabled", True, True, False, False)
    harmless = ConditionalAccessPolicy(
        "p2", "Report only", "enabledForReportingButNotEnforced", True, True, True, False
    )
    snapshot = replace(full_snapshot(), conditional_access=Reading([policy, harmless]))
    report = evaluate(snapshot, catalog, "v6", remedies)
    assert report.verdict is Verdict.degraded
    item = next(i for i in report.items if i.id == "policy.conditional_access")
    assert item.status is CheckStatus.warn and "'Block legacy everything'" in item.detail
    assert "Report only" not in item.detail


@pytest.mark.parametrize(
    "field",
    ["service_principal", "app_roles", "directory_roles", "audit_log_enabled", "dehydrated", "org_management_roles",
     "p2_licensed", "conditional_access"],
)
def test_any_fact_that_could_not_be_read_makes_the_verdict_unknown_never_ready(field: str) -> None:
    snapshot = replace(full_snapshot(), **{field: Reading.failed("Graph answered 503 (ServiceUnavailable)")})
    report = evaluate(snapshot, catalog, "v6", remedies)
    assert report.verdict is Verdict.unknown
    assert any("Could not check: Graph answered 503" in item.detail for item in report.items)


def test_a_certain_blocker_wins_over_unknowns() -> None:
    snapshot = replace(full_snapshot(), audit_log_enabled=Reading(False),
                       conditional_access=Reading.failed("throttled"))
    assert evaluate(snapshot, catalog, "v6", remedies).verdict is Verdict.blocked


def test_report_json_round_trips_for_the_cache() -> None:
    from bot.readiness.model import Report

    report = evaluate(without(full_snapshot(), "Mail.ReadWrite", "AuditLog.Read.All"), catalog, "v6", remedies)
    data = report.to_json()
    assert set(data) >= {"tenant", "catalog_version", "satisfied_version", "verdict", "items", "missing",
                         "round_trips", "duration_ms", "retry_after"}
    again = Report.model_validate_json(report.model_dump_json())
    assert again == report  # every field comes back, `blocking` included
    assert [i.id for i in again.items if i.blocking] == ["graph.AuditLog.Read.All"]


def test_throttling_past_the_retries_carries_retry_after_up_to_the_report() -> None:
    snapshot = replace(full_snapshot(), conditional_access=Reading.failed("Graph answered 429", retry_after=40.0),
                       audit_log_enabled=Reading.failed("Exchange: 503", retry_after=120.0))
    report = evaluate(snapshot, catalog, "v6", remedies)
    assert report.verdict is Verdict.unknown  # what an engineer is told stays honest
    assert report.retry_after == 120.0  # what a background job needs to reschedule

