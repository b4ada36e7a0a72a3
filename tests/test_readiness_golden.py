"""Golden outputs of the readiness check: fixed fake tenants (pass, fail and warn mixes, Microsoft faults, login
failures) checked cold and then warm (Redis cache), their Report JSON, terminal text and Slack blocks compared
with what the code produced when the outputs were recorded. Guards optimisations of the check against any change
in what people are told.

Re-record (only for an intended change of output): ITDR_RECORD_GOLDEN=1 ./test tests/test_readiness_golden.py
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.microsoft import MicrosoftClients
from bot.readiness.model import Report
from bot.readiness.service import ReadinessService
from bot.store import Cache
from bot.terminal import render_report
from catalog import Kind, load_catalog
from handlers.blocks.check import check_message
from handlers.ids import SubCommand
from handlers.payloads import AnswerRequest
from tests.fakes.microsoft import (
    GRAPH_APP_ID,
    PARTNER_CENTER_APP_ID,
    FakeMicrosoft,
    SleepRecorder,
    TenantScenario,
    running_fake,
)
from tests.test_readiness_check import complete_scenario

catalog = load_catalog()
GOLDEN = Path(__file__).parent / "golden" / "readiness.json.gz"  # gzip: 2.4 MB of JSON, 100-odd KB packed
RECORD = os.environ.get("ITDR_RECORD_GOLDEN") == "1"
NAMESPACE = uuid.UUID("0e6b3f0a-5a55-4c8e-9a1e-6f3d2c1b0a99")


def tenant(name: str, version: str = "v6", **overrides: Any) -> TenantScenario:
    """A tenant granting every non-CPV item of `version`, then `overrides`; its id is fixed by its name."""
    return complete_scenario(version, tenant_id=str(uuid.uuid5(NAMESPACE, name)),
                             domains=[f"{name}.onmicrosoft.com"], **overrides)


def without(scenario: TenantScenario, *names: str) -> TenantScenario:
    items = [item for item in (catalog.get(name) for name in names) if item]
    pairs = {(i.ids.resource_app_id, i.ids.application_id) for i in items}
    templates = {i.ids.template_id for i in items}
    scenario.app_role_assignments = [p for p in scenario.app_role_assignments if p not in pairs]
    scenario.directory_roles = [r for r in scenario.directory_roles if r not in templates]
    roles = {i.name for i in items if i.kind is Kind.role_group_role}
    scenario.org_management_roles = [r for r in scenario.org_management_roles if r not in roles]
    return scenario


BLOCKING_CA = {
    "id": "ca-1", "displayName": "Block legacy everywhere", "state": "enabled",
    "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}},
    "grantControls": {"builtInControls": ["block"]},
}
REPORT_ONLY_CA = {**BLOCKING_CA, "id": "ca-2", "displayName": "Report only",
                  "state": "enabledForReportingButNotEnforced"}


def _future(kind: Kind) -> str:
    return next(i.name for i in catalog.items_at("v6") if i.kind is kind and i.status.value == "future")


def _active(kind: Kind) -> str:
    return next(i.name for i in catalog.items_at("v6") if i.kind is kind and i.status.value == "active")


# name -> (scenario, faults to set on the fake, revision checked)
Fault = Callable[[FakeMicrosoft], object]
SCENARIOS: dict[str, tuple[Callable[[], TenantScenario], list[Fault], str | None]] = {
    "ready": (lambda: tenant("ready"), [], None),
    "ready-v3": (lambda: tenant("ready-v3", "v3"), [], "v3"),
    "v3-tenant-on-v6": (lambda: tenant("v3-on-v6", "v3"), [], None),
    "missing-mix": (lambda: without(tenant("missing-mix"), _active(Kind.application_permission),
                                    _future(Kind.application_permission), _active(Kind.directory_role),
                                    _active(Kind.role_group_role)), [], None),
    "warnings": (lambda: tenant("warnings", p2_licence=False, security_defaults=True,
                                ca_policies=[BLOCKING_CA, REPORT_ONLY_CA]), [], None),
    "exchange-off": (lambda: tenant("exchange-off", audit_log_ingestion=False, dehydrated=True), [], None),
    "sp-absent": (lambda: tenant("sp-absent", sp_exists=False), [], None),
    "sp-disabled": (lambda: tenant("sp-disabled", sp_enabled=False), [], None),
    "exchange-503": (lambda: tenant("exchange-503"),
                     [lambda f: f.fail(r"InvokeCommand", status=503, times=None, service="exchange")], None),
    "exchange-403": (lambda: tenant("exchange-403"),
                     [lambda f: f.fail(r"InvokeCommand", status=403, times=None, service="exchange")], None),
    "grants-503": (lambda: tenant("grants-503"),
                   [lambda f: f.fail(r"appRoleAssignments", status=503, times=None, in_batch=True)], None),
    "ca-403": (lambda: tenant("ca-403"), [lambda f: f.fail_in_batch(r"conditionalAccess", status=403, times=None)],
               None),
    "alt-key-refused": (lambda: tenant("alt-key-refused"),
                        [lambda f: f.fail_in_batch(r"appId='[^']*'\)/appRoleAssignments", status=400,
                                                   retry_after=None, times=None)], None),
    "batch-down": (lambda: tenant("batch-down"), [lambda f: f.fail(r"\$batch", status=503, times=None)], None),
    "login-app-not-in-tenant": (lambda: tenant("login-absent", app_in_tenant=False), [], None),
    "login-bad-secret": (lambda: tenant("login-bad-secret", token_error=7000222), [], None),
    "login-consent": (lambda: tenant("login-consent", token_error=65001), [], None),
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMicrosoft]:
    with running_fake() as fake:
        yield fake


@pytest.fixture
async def cache(redis_url: str, redis_prefix: str) -> AsyncIterator[Cache]:
    client = aioredis.Redis.from_url(redis_url)
    yield Cache(client, redis_prefix)
    await client.aclose()


def _outputs(report: Report, fake: FakeMicrosoft) -> dict[str, Any]:
    """The report as people see it, with what varies by run (time taken, when, the fake's ports) fixed."""
    report = report.model_copy(update={"duration_ms": 0, "checked_at": "2026-01-01T00:00:00+00:00"})
    request = AnswerRequest(cmd=SubCommand.CHECK, args=(report.tenant.id,))
    outputs = {
        "json": json.loads(report.model_dump_json()),
        "terminal": render_report(report).splitlines(),
        "slack": check_message(report, request),
        "slack_shared": check_message(report, request, shared_by="U0GOLDEN"),
    }
    text = json.dumps(outputs, sort_keys=True, default=str)
    for service in ("login", "graph", "exchange"):
        text = text.replace(fake.url(service), f"https://{service}.fake")
    return json.loads(text)


async def _check_all(fake: FakeMicrosoft, cache: Cache, *, cpv_mode: bool = False) -> dict[str, Any]:
    settings = fake.settings(itdr_cpv_mode=cpv_mode)
    service = ReadinessService(settings, catalog, cache=cache,
                               clients=MicrosoftClients(settings, sleep=SleepRecorder()))
    results: dict[str, Any] = {}
    try:
        for name, (make, faults, version) in SCENARIOS.items():
            fake.clear()
            scenario = fake.add_tenant(make())
            for fault in faults:
                fault(fake)
            cold = await service.check(scenario.tenant_id, version, fresh=True)
            warm = await service.check(scenario.tenant_id, version, fresh=True)
            results[name] = {"cold": _outputs(cold, fake), "warm": _outputs(warm, fake)}
    finally:
        fake.clear()
        await service.aclose()
    return results


async def _cpv(fake: FakeMicrosoft, cache: Cache) -> dict[str, Any]:
    settings = fake.settings(itdr_cpv_mode=True)
    service = ReadinessService(settings, catalog, cache=cache,
                               clients=MicrosoftClients(settings, sleep=SleepRecorder()))
    cpv_items = [i for i in catalog.current_items if i.cpv_only and i.kind is Kind.application_permission]
    scenario = tenant("cpv")
    scenario.app_role_assignments += [(i.ids.resource_app_id, i.ids.application_id)  # type: ignore[misc]
                                      for i in cpv_items]
    scenario.delegated_grants = [(GRAPH_APP_ID, "Directory.AccessAsUser.All User.Read"),
                                 (PARTNER_CENTER_APP_ID, "user_impersonation")]
    fake.clear()
    fake.add_tenant(scenario)
    try:
        cold = await service.check(scenario.tenant_id, fresh=True)
        warm = await service.check(scenario.tenant_id, fresh=True)
    finally:
        await service.aclose()
    return {"cold": _outputs(cold, fake), "warm": _outputs(warm, fake)}


async def test_reports_are_unchanged(fake: FakeMicrosoft, cache: Cache) -> None:
    results = await _check_all(fake, cache)
    results["cpv"] = await _cpv(fake, cache)
    if RECORD:
        GOLDEN.parent.mkdir(exist_ok=True)
        text = json.dumps(results, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        GOLDEN.write_bytes(gzip.compress(text.encode(), mtime=0))
    expected = json.loads(gzip.decompress(GOLDEN.read_bytes()))
    assert sorted(results) == sorted(expected)
    for name in expected:
        for run in ("cold", "warm"):
            for view in expected[name][run]:
                assert results[name][run][view] == expected[name][run][view], (name, run, view)
