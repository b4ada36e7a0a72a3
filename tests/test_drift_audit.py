"""Who did it, from Entra's directory audit as Entra really writes it (the fake emits the shapes that independent
parsers of real exports agree on, sources cited beside it): each kind of loss finds its actor and time, someone
else's removal is never blamed on the ITDR app, and when the audit cannot say, the message says why."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from bot.drift import model
from bot.drift.audit import revocations
from bot.drift.model import Change
from bot.drift.service import DriftService
from bot.drift.store import DriftStore
from bot.microsoft import MicrosoftClients
from bot.microsoft.http import Priority
from bot.readiness.service import ReadinessService
from catalog import load_catalog
from handlers.blocks.drift import drift_message
from tests.fakes.microsoft import (
    DEFAULT_TARGET_APP_ID,
    GRAPH_APP_ID,
    FakeMicrosoft,
    SleepRecorder,
    TenantScenario,
    running_fake,
)
from tests.test_readiness_check import complete_scenario

catalog = load_catalog()
EXCHANGE_ADMINISTRATOR = "29232cdf-9323-42fd-ade2-1d097af3e4de"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMicrosoft]:
    with running_fake() as fake:
        yield fake


@pytest.fixture
async def drift(fake: FakeMicrosoft) -> AsyncIterator[DriftService]:
    fake.clear()
    settings = fake.settings()
    readiness = ReadinessService(settings, catalog, clients=MicrosoftClients(settings, sleep=SleepRecorder()))
    yield DriftService(catalog, cast(DriftStore, None), readiness)  # `who` reads no state
    await readiness.aclose()


async def lose(drift: DriftService, scenario: TenantScenario, action: Any, *,
               baseline_age: timedelta = timedelta(minutes=1)) -> tuple[Change, str]:
    """Baseline the tenant, let `action` happen, check again: the change and its drift message's text."""
    now = datetime.now(UTC)
    before = await drift.check(scenario.tenant_id, priority=Priority.HIGH)
    before = before.model_copy(update={"checked_at": (now - baseline_age).isoformat()})  # read back then
    snapshot, _ = model.observe(None, before, now=now - baseline_age)
    action()
    after = await drift.check(scenario.tenant_id, priority=Priority.HIGH)
    _, change = model.observe(snapshot, after, now=now)
    who = await drift.who(change, after.app_object_id)
    message = drift_message(change, catalog, who)
    return change, json.dumps(message.blocks, ensure_ascii=False)


async def test_an_application_permission_removed_names_who_though_graph_is_the_target(
    fake: FakeMicrosoft, drift: DriftService
) -> None:
    scenario = fake.add_tenant(complete_scenario())
    other = "0f0f0f0f-0000-4000-8000-000000000001"

    def act() -> None:
        # The same permission taken from another app by someone else first: never blamed on the ITDR app.
        scenario.revoke(GRAPH_APP_ID, "AuditLog.Read.All", by="bystander@contoso.onmicrosoft.com",
                        client_sp_id=other)
        scenario.revoke(GRAPH_APP_ID, "AuditLog.Read.All", by="mallory@contoso.onmicrosoft.com")

    change, text = await lose(drift, scenario, act)
    assert [item.catalog_name for item in change.drifted] == ["AuditLog.Read.All"]
    assert "Remove app role assignment from service principal (`AuditLog.Read.All`) by " \
           "*mallory@contoso.onmicrosoft.com*" in text
    assert "bystander" not in text
    # The query does not ask for the ITDR app as a target: Entra names Microsoft Graph there.
    assert not any(scenario.sp_id in flt and "Remove app role" in flt for flt in fake.audit_queries)


async def test_a_directory_role_removed_names_who(fake: FakeMicrosoft, drift: DriftService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    _, text = await lose(drift, scenario, lambda: scenario.remove_role(EXCHANGE_ADMINISTRATOR,
                                                                       by="eve@contoso.onmicrosoft.com"))
    assert "Remove member from role (`Exchange Administrator`) by *eve@contoso.onmicrosoft.com*" in text


async def test_an_eligible_role_removed_under_pim_names_who(fake: FakeMicrosoft, drift: DriftService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    _, text = await lose(drift, scenario, lambda: scenario.remove_role(EXCHANGE_ADMINISTRATOR, eligible=True,
                                                                       by="pim@contoso.onmicrosoft.com"))
    assert "Remove eligible member from role (`Exchange Administrator`) by *pim@contoso.onmicrosoft.com*" in text


async def test_the_app_disabled_names_who(fake: FakeMicrosoft, drift: DriftService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    _, text = await lose(drift, scenario, lambda: scenario.disable_sp(by="oscar@contoso.onmicrosoft.com"))
    assert "Update service principal (disabled) by *oscar@contoso.onmicrosoft.com*" in text


async def test_the_app_deleted_names_who_by_its_app_id(fake: FakeMicrosoft, drift: DriftService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    _, text = await lose(drift, scenario, lambda: scenario.delete_sp(fake.target_app_id,
                                                                     by="trudy@contoso.onmicrosoft.com"))
    assert "Remove service principal (deleted) by *trudy@contoso.onmicrosoft.com*" in text


async def test_a_delegated_grant_removed_names_its_scopes_and_who(fake: FakeMicrosoft, drift: DriftService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    scenario.delegated_grants = [(GRAPH_APP_ID, "Directory.AccessAsUser.All User.Read")]
    now = datetime.now(UTC)
    scenario.remove_delegated(GRAPH_APP_ID, by="walter@contoso.onmicrosoft.com")
    who = await revocations(drift.readiness.clients, scenario.tenant_id, scenario.sp_id,  # type: ignore[union-attr]
                            now - timedelta(minutes=5), now=now, app_id=DEFAULT_TARGET_APP_ID)
    (event,) = who.events
    assert event.activity == "Remove delegated permission grant" and event.actor == "walter@contoso.onmicrosoft.com"
    assert event.mentions("Directory.AccessAsUser.All") and event.mentions("User.Read")
    assert not event.mentions("User.ReadWrite")


async def test_without_audit_log_read_all_the_message_says_so(fake: FakeMicrosoft, drift: DriftService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    scenario.audit_forbidden = True
    _, text = await lose(drift, scenario, lambda: scenario.revoke(GRAPH_APP_ID, "AuditLog.Read.All"))
    assert "The directory audit could not be read (no AuditLog.Read.All" in text
    assert "Directory.Read.All" in text


async def test_a_change_older_than_the_audit_retention_says_so(fake: FakeMicrosoft, drift: DriftService) -> None:
    scenario = fake.add_tenant(complete_scenario())
    # Removed 12 days ago, last checked 13 days ago: Entra has dropped the entry (the fake keeps none).
    _, text = await lose(drift, scenario, lambda: scenario.app_role_assignments.pop(),
                         baseline_age=timedelta(days=13))
    assert "longer ago than Entra keeps its audit (7 days without Entra ID P1/P2, 30 with)" in text
