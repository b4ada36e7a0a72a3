"""Exchange admin API InvokeCommand: request shape, paging, output and error texts."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pytest_httpx import HTTPXMock

from bot.microsoft import BadRequest, MicrosoftClients, Unauthorized
from bot.microsoft.exchange import ExchangeClient, parse_exchange_error
from bot.microsoft.http import MicrosoftHttp
from bot.settings import Settings
from tests.fakes.microsoft import ORG_MANAGEMENT_ROLES, FakeMicrosoft, SleepRecorder, TenantScenario, running_fake

TENANT = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
EXO = f"https://outlook.office365.com/adminapi/beta/{TENANT}/InvokeCommand"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMicrosoft]:
    with running_fake() as fake:
        fake.add_tenant(TenantScenario(TENANT, domains=["contoso.onmicrosoft.com"], dehydrated=True))
        yield fake


@pytest.fixture
async def ms(fake: FakeMicrosoft) -> AsyncIterator[MicrosoftClients]:
    fake.clear()
    fake.page_size = None
    clients = MicrosoftClients(fake.settings(), sleep=SleepRecorder())
    yield clients
    await clients.aclose()


async def test_invoke_sends_the_documented_request(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    [config] = await ms.exchange.invoke(TENANT, "Get-AdminAuditLogConfig", select=["UnifiedAuditLogIngestionEnabled"])
    assert config == {"UnifiedAuditLogIngestionEnabled": True}
    [request] = fake.recorded("exchange")
    assert request.method == "POST"
    assert request.path == f"/adminapi/beta/{TENANT}/InvokeCommand"
    assert request.query == {"$select": "UnifiedAuditLogIngestionEnabled"}
    assert request.body == {"CmdletInput": {"CmdletName": "Get-AdminAuditLogConfig", "Parameters": {}}}
    assert request.headers["x-anchormailbox"] == f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{TENANT}"
    assert request.headers["prefer"] == "odata.maxpagesize=1000"
    assert request.headers["content-type"].startswith("application/json")


async def test_domain_is_resolved_to_the_tenant_guid(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    [org] = await ms.exchange.invoke("contoso.onmicrosoft.com", "Get-OrganizationConfig")
    assert org["IsDehydrated"] is True
    assert fake.recorded("exchange")[0].path == f"/adminapi/beta/{TENANT}/InvokeCommand"


async def test_role_assignments_with_parameters_and_paging(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    fake.page_size = 2
    rows = await ms.exchange.invoke(TENANT, "Get-ManagementRoleAssignment", {"Delegating": False})
    org = sorted(r["Role"] for r in rows if r["RoleAssigneeName"] == "Organization Management")
    assert org == sorted(ORG_MANAGEMENT_ROLES)
    requests = fake.recorded("exchange")
    assert len(requests) == 3  # 6 rows in pages of 2
    assert all(r.body["CmdletInput"]["Parameters"] == {"Delegating": False} for r in requests)
    [group] = await ms.exchange.invoke(TENANT, "Get-RoleGroup", {"Identity": "Organization Management"})
    assert group["Roles"] == list(ORG_MANAGEMENT_ROLES)


async def test_unknown_cmdlet_error_text_reaches_the_caller(ms: MicrosoftClients) -> None:
    with pytest.raises(BadRequest, match="'Get-Nonsense' is not recognized as a name of a cmdlet") as info:
        await ms.exchange.invoke(TENANT, "Get-Nonsense")
    assert info.value.service == "exchange"


async def test_unlicensed_tenant_says_so(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    tid = str(uuid.uuid4())
    fake.add_tenant(TenantScenario(tid, domains=["nolicence.onmicrosoft.com"], exchange_licensed=False))
    with pytest.raises(BadRequest, match="Request not applicable to target tenant"):
        await ms.exchange.invoke(tid, "Get-OrganizationConfig")


async def test_cmdlet_and_select_are_validated(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    with pytest.raises(ValueError):
        await ms.exchange.invoke(TENANT, "Get-Mailbox; Remove-Mailbox")
    with pytest.raises(ValueError):
        await ms.exchange.invoke(TENANT, "Get-Mailbox", select=["Name,Secret"])
    assert fake.recorded("exchange") == []


async def test_throttled_invoke_is_retried(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    fake.throttle(r"InvokeCommand", service="exchange", retry_after=5)
    assert await ms.exchange.invoke(TENANT, "Get-OrganizationConfig")
    assert [r.status for r in fake.recorded("exchange")] == [429, 200]
    assert ms.http.sleep.calls == [5.0]  # type: ignore[attr-defined]


# --- error parsing (unit) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": {"code": "x", "message": "outer", "details": [{"message": "detail one"}, {"message": "two"}]}},
            "detail one; two",
        ),
        (
            {"error": {"code": "x", "message": "outer", "innererror": {"internalException": {"message": "inner"}}}},
            "inner",
        ),
        ({"error": {"code": "x", "message": "Provide valid credential."}}, "Provide valid credential."),
    ],
)
def test_error_message_precedence(body: dict[str, object], expected: str) -> None:
    assert parse_exchange_error(httpx.Response(400, json=body)) == ("x", expected)


async def test_credential_error_is_unauthorized(httpx_mock: HTTPXMock) -> None:
    class StubTokens:
        async def get_token(self, tenant: object, resource: object) -> str:
            return "t"

        async def tenant_id(self, tenant: object) -> str:
            return TENANT

    httpx_mock.add_response(
        url=EXO, method="POST", status_code=401, json={"error": {"code": "401", "message": "Provide valid credential."}}
    )
    async with httpx.AsyncClient() as client:
        exchange = ExchangeClient(MicrosoftHttp(client), StubTokens(), Settings(_env_file=None))  # type: ignore[arg-type, call-arg]
        with pytest.raises(Unauthorized, match="Provide valid credential"):
            await exchange.invoke(TENANT, "Get-OrganizationConfig")
    sent = json.loads(httpx_mock.get_requests()[0].content)
    assert sent == {"CmdletInput": {"CmdletName": "Get-OrganizationConfig", "Parameters": {}}}
