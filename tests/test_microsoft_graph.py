"""Graph client: batching, retries, paging. Unit tests via pytest-httpx, end-to-end via the fake."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from bot.microsoft import (
    MicrosoftClients,
    MicrosoftError,
    NotFound,
    ServiceUnavailable,
    SubRequest,
    Throttled,
    TransportError,
    odata_string,
    parse_tenant,
    track_round_trips,
)
from bot.microsoft.graph import GraphClient
from bot.microsoft.http import MicrosoftHttp, Priority, RetryPolicy
from bot.settings import Settings
from tests.fakes.microsoft import (
    ENTRA_ROLES,
    GRAPH_APP_ID,
    FakeMicrosoft,
    SleepRecorder,
    TenantScenario,
    running_fake,
)

GRAPH = "https://graph.microsoft.com/v1.0"
BATCH = f"{GRAPH}/$batch"
TENANT = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


class StubTokens:
    async def get_token(self, tenant: object, resource: object) -> str:
        return "stub-token"

    async def tenant_id(self, tenant: object) -> str:
        return str(parse_tenant(tenant))  # type: ignore[arg-type]


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
async def graph(sleeps: SleepRecorder) -> AsyncIterator[GraphClient]:
    async with httpx.AsyncClient() as client:
        http = MicrosoftHttp(client, policy=RetryPolicy(), sleep=sleeps, rng=lambda: 0.5)
        yield GraphClient(http, StubTokens(), Settings(_env_file=None), TENANT)  # type: ignore[arg-type, call-arg]


def batch_ids(request: httpx.Request) -> list[str]:
    return [r["id"] for r in json.loads(request.content)["requests"]]


def batch_response(items: list[dict[str, Any]]) -> httpx.Response:
    return httpx.Response(200, json={"responses": items})


# --- $batch (unit) -------------------------------------------------------------------------------------


async def test_batch_of_25_is_split_into_two_posts_and_correlated_by_id(
    graph: GraphClient, httpx_mock: HTTPXMock
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        # Reverse order on purpose: Graph may answer in any order.
        return batch_response([{"id": i, "status": 200, "body": {"echo": i}} for i in reversed(batch_ids(request))])

    httpx_mock.add_callback(answer, url=BATCH, method="POST", is_reusable=True)
    requests = [SubRequest(id=f"r{n}", url=f"/users/{n}") for n in range(25)]
    results = await graph.batch(requests)

    posts = httpx_mock.get_requests()
    assert sorted(len(batch_ids(p)) for p in posts) == [5, 20]
    assert list(results) == [f"r{n}" for n in range(25)]
    assert all(results[f"r{n}"].body == {"echo": f"r{n}"} for n in range(25))
    assert posts[0].headers["Authorization"] == "Bearer stub-token"


async def test_throttled_sub_request_is_retried_alone_after_its_retry_after(
    graph: GraphClient, httpx_mock: HTTPXMock, sleeps: SleepRecorder
) -> None:
    httpx_mock.add_response(
        url=BATCH,
        method="POST",
        json={
            "responses": [
                {"id": "sp", "status": 404, "body": {"error": {"code": "Request_ResourceNotFound", "message": "gone"}}},
                {
                    "id": "skus",
                    "status": 429,
                    "headers": {"Retry-After": "7"},
                    "body": {"error": {"code": "TooManyRequests"}},
                },
                {"id": "org", "status": 200, "body": {"value": [{"id": TENANT}]}},
                {
                    "id": "ca",
                    "status": 403,
                    "body": {"error": {"code": "Authorization_RequestDenied", "message": "no"}},
                },
            ]
        },
    )
    httpx_mock.add_response(
        url=BATCH, method="POST", json={"responses": [{"id": "skus", "status": 200, "body": {"value": []}}]}
    )
    results = await graph.batch(
        {"org": "/organization", "skus": "/subscribedSkus", "sp": "/servicePrincipals(appId='x')", "ca": "/identity/x"}
    )
    first, second = httpx_mock.get_requests()
    assert sorted(batch_ids(first)) == ["ca", "org", "skus", "sp"]
    assert batch_ids(second) == ["skus"]  # only the throttled one went again
    assert sleeps.calls == [7.0]
    assert results["skus"].ok and results["skus"].attempts == 2
    # Non-retryable failures are results for the caller, not exceptions.
    assert results["sp"].status == 404 and results["sp"].error_code == "Request_ResourceNotFound"
    assert results["ca"].status == 403
    with pytest.raises(NotFound):
        results["sp"].raise_for_status()


async def test_sub_request_without_retry_after_uses_jittered_backoff(
    graph: GraphClient, httpx_mock: HTTPXMock, sleeps: SleepRecorder
) -> None:
    httpx_mock.add_response(url=BATCH, method="POST", json={"responses": [{"id": "1", "status": 503}]})
    httpx_mock.add_response(url=BATCH, method="POST", json={"responses": [{"id": "1", "status": 200, "body": {}}]})
    results = await graph.batch({"1": "/organization"})
    assert results["1"].ok
    assert sleeps.calls == [0.5]  # rng 0.5 * base 1 s


async def test_sub_request_failing_forever_stops_after_bounded_attempts(
    graph: GraphClient, httpx_mock: HTTPXMock, sleeps: SleepRecorder
) -> None:
    httpx_mock.add_response(
        url=BATCH, method="POST", json={"responses": [{"id": "1", "status": 504}]}, is_reusable=True
    )
    results = await graph.batch({"1": "/organization"})
    assert len(httpx_mock.get_requests()) == 5
    assert len(sleeps.calls) == 4
    assert results["1"].status == 504 and results["1"].attempts == 5
    with pytest.raises(ServiceUnavailable):
        results["1"].raise_for_status()


async def test_batch_rejects_duplicate_ids_and_absolute_urls(graph: GraphClient) -> None:
    with pytest.raises(ValueError):
        await graph.batch([SubRequest("a", "/organization"), SubRequest("a", "/subscribedSkus")])
    with pytest.raises(ValueError):
        await graph.batch({"a": "https://evil.example/organization"})


# --- plain requests (unit) --------------------------------------------------------------------------------


async def test_get_honours_retry_after(graph: GraphClient, httpx_mock: HTTPXMock, sleeps: SleepRecorder) -> None:
    httpx_mock.add_response(url=f"{GRAPH}/organization", status_code=429, headers={"Retry-After": "3"})
    httpx_mock.add_response(url=f"{GRAPH}/organization", json={"value": []})
    assert await graph.get("/organization") == {"value": []}
    assert sleeps.calls == [3.0]


async def test_persistent_503_ends_in_typed_error_after_bounded_retries(
    graph: GraphClient, httpx_mock: HTTPXMock, sleeps: SleepRecorder
) -> None:
    httpx_mock.add_response(
        url=f"{GRAPH}/organization",
        status_code=503,
        json={"error": {"code": "ServiceUnavailable", "message": "Service is busy"}},
        is_reusable=True,
    )
    with pytest.raises(ServiceUnavailable, match="Service is busy") as info:
        await graph.get("/organization")
    assert info.value.status == 503 and info.value.service == "graph"
    assert len(httpx_mock.get_requests()) == 5
    assert sleeps.calls == [0.5, 1.0, 2.0, 4.0]  # full jitter (rng=0.5) of 1, 2, 4, 8 s


async def test_retry_after_beyond_the_cap_is_not_slept_through(
    graph: GraphClient, httpx_mock: HTTPXMock, sleeps: SleepRecorder
) -> None:
    httpx_mock.add_response(url=f"{GRAPH}/organization", status_code=429, headers={"Retry-After": "600"})
    with pytest.raises(Throttled) as info:
        await graph.get("/organization")
    assert info.value.retry_after == 600
    assert sleeps.calls == []


async def test_not_found_is_typed_and_not_retried(graph: GraphClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=f"{GRAPH}/servicePrincipals(appId='abc')",
        status_code=404,
        json={"error": {"code": "Request_ResourceNotFound", "message": "Resource 'abc' does not exist"}},
    )
    with pytest.raises(NotFound) as info:
        await graph.get("/servicePrincipals(appId='abc')")
    assert info.value.code == "Request_ResourceNotFound"
    assert len(httpx_mock.get_requests()) == 1


async def test_network_errors_are_retried_then_typed(
    graph: GraphClient, httpx_mock: HTTPXMock, sleeps: SleepRecorder
) -> None:
    httpx_mock.add_exception(httpx.ConnectError("refused"), is_reusable=True)
    with pytest.raises(TransportError):
        await graph.get("/organization")
    assert len(httpx_mock.get_requests()) == 5


async def test_get_all_follows_next_link(graph: GraphClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=f"{GRAPH}/users", json={"value": [{"id": 1}], "@odata.nextLink": f"{GRAPH}/users?$skiptoken=a"}
    )
    httpx_mock.add_response(
        url=f"{GRAPH}/users?$skiptoken=a",
        json={"value": [{"id": 2}], "@odata.nextLink": f"{GRAPH}/users?$skiptoken=b"},
    )
    httpx_mock.add_response(url=f"{GRAPH}/users?$skiptoken=b", json={"value": [{"id": 3}]})
    assert await graph.get_all("/users") == [{"id": 1}, {"id": 2}, {"id": 3}]


async def test_next_link_to_another_host_is_refused(graph: GraphClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=f"{GRAPH}/users", json={"value": [], "@odata.nextLink": "https://evil.example/v1.0/users?x=1"}
    )
    with pytest.raises(MicrosoftError, match="refusing"):
        await graph.get_all("/users")


def test_odata_string_doubles_quotes() -> None:
    assert odata_string("it's") == "'it''s'"


# --- against the fake ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMicrosoft]:
    with running_fake() as fake:
        scenario = fake.add_tenant(
            TenantScenario(
                TENANT,
                directory_roles=["29232cdf-9323-42fd-ade2-1d097af3e4de", "92ed04bf-c94a-4b82-9729-b799a7a4c178"],
                delegated_grants=[(GRAPH_APP_ID, "User.Read Directory.Read.All")],
            )
        )
        scenario.grant_all(GRAPH_APP_ID, "Directory.ReadWrite.All", "AuditLog.Read.All", "Policy.Read.All")
        yield fake


@pytest.fixture
async def ms(fake: FakeMicrosoft, sleeps: SleepRecorder) -> AsyncIterator[MicrosoftClients]:
    fake.clear()
    fake.page_size = None
    clients = MicrosoftClients(fake.settings(), sleep=sleeps)
    yield clients
    await clients.aclose()


async def test_fake_batch_with_one_failed_sub_request(
    ms: MicrosoftClients, fake: FakeMicrosoft, sleeps: SleepRecorder
) -> None:
    fake.fail_in_batch(r"/subscribedSkus", 429, retry_after=2)
    results = await ms.graph(TENANT).batch(
        {
            "org": "/organization?$select=id,displayName",
            "skus": "/subscribedSkus",
            "sec": "/policies/identitySecurityDefaultsEnforcementPolicy",
        }
    )
    assert all(r.ok for r in results.values())
    assert results["org"].body["value"][0] == {"id": TENANT, "displayName": "Contoso"}
    assert sleeps.calls == [2.0]
    assert len(fake.recorded("graph", path=r"/\$batch$")) == 2
    assert len(fake.recorded("graph", path="subscribedSkus", in_batch=True)) == 2
    assert len(fake.recorded("graph", path="organization", in_batch=True)) == 1


async def test_fake_batch_of_25_makes_two_round_trips(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    with track_round_trips() as trips:
        results = await ms.graph(TENANT).batch({str(n): "/organization" for n in range(25)})
    assert len(results) == 25 and all(r.ok for r in results.values())
    assert trips.by_service["graph"] == 2
    assert fake.round_trips("graph") == 2
    assert len(fake.recorded("graph", in_batch=True)) == 25


async def test_fake_persistent_503_is_bounded(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    fake.fail(r"^/v1\.0/organization$", 503)
    with track_round_trips() as trips, pytest.raises(ServiceUnavailable):
        await ms.graph(TENANT).get("/organization")
    assert len(fake.recorded("graph", path="organization")) == 5
    assert trips.by_service["graph"] == 5 and trips.retries == 4


async def test_fake_throttles_the_nth_request(ms: MicrosoftClients, fake: FakeMicrosoft, sleeps: SleepRecorder) -> None:
    fake.throttle(r"/organization", nth=2, retry_after=4)
    graph = ms.graph(TENANT)
    await graph.get("/organization")
    await graph.get("/organization")
    assert sleeps.calls == [4.0]
    assert [r.status for r in fake.recorded("graph")] == [200, 429, 200]


async def test_fake_paging_is_followed(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    fake.page_size = 2
    assignments = await ms.graph(TENANT).get_all(
        f"/servicePrincipals/{fake.tenants[TENANT].sp_id}/appRoleAssignments?$select=appRoleId,resourceId"
    )
    assert len(assignments) == 3
    assert len(fake.recorded("graph", path="appRoleAssignments")) == 2


async def test_fake_speaks_the_readiness_queries(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    graph = ms.graph(TENANT, priority=Priority.HIGH)
    sp = await graph.get(
        f"/servicePrincipals(appId={odata_string(fake.target_app_id)})?$select=id,appId,accountEnabled"
    )
    assert set(sp) == {"@odata.context", "id", "appId", "accountEnabled"}
    sp_id = sp["id"]
    results = await graph.batch(
        {
            "grants": f"/oauth2PermissionGrants?$filter=clientId eq {odata_string(sp_id)}",
            "roles": f"/roleManagement/directory/roleAssignments?$filter=principalId eq {odata_string(sp_id)}"
            "&$expand=roleDefinition($select=id,displayName,templateId)",
            "graph": f"/servicePrincipals(appId='{GRAPH_APP_ID}')?$select=id,appRoles",
            "byfilter": f"/servicePrincipals?$filter=appId eq {odata_string(fake.target_app_id)}",
        }
    )
    assert [g["scope"] for g in results["grants"].body["value"]] == ["User.Read Directory.Read.All"]
    names = {r["roleDefinition"]["displayName"] for r in results["roles"].body["value"]}
    assert names == {ENTRA_ROLES["29232cdf-9323-42fd-ade2-1d097af3e4de"], "Organizational Branding Administrator"}
    roles = {r["value"]: r for r in results["graph"].body["appRoles"]}
    assert roles["Directory.ReadWrite.All"]["id"] == "19dbc75e-c2e2-444c-a770-ec69d8559fc7"
    assert roles["Directory.ReadWrite.All"]["allowedMemberTypes"] == ["Application"]
    assert [s["id"] for s in results["byfilter"].body["value"]] == [sp_id]
    assert fake.recorded("graph")[0].headers["x-ms-throttle-priority"] == "high"


async def test_fake_missing_service_principal_is_404(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    tid = str(uuid.uuid4())
    fake.add_tenant(TenantScenario(tid, domains=["empty.onmicrosoft.com"], sp_exists=False))
    graph = ms.graph("empty.onmicrosoft.com")
    with pytest.raises(NotFound) as info:
        await graph.get(f"/servicePrincipals(appId='{fake.target_app_id}')")
    assert info.value.code == "Request_ResourceNotFound"
    assert await graph.get_all(f"/servicePrincipals?$filter=appId eq '{fake.target_app_id}'") == []


async def test_microsoft_calls_go_over_aiohttp_unless_a_proxy_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from httpx_aiohttp import AiohttpTransport

    from bot.microsoft.http import build_async_client

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with build_async_client() as client:
        assert isinstance(client._transport, AiohttpTransport)
    # aiohttp would ignore the proxy (trust_env): httpx's own transport honours it.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    async with build_async_client() as client:
        assert isinstance(client._transport, httpx.AsyncHTTPTransport)


async def test_a_connection_closed_mid_request_is_a_network_error_not_a_timeout() -> None:
    from bot.microsoft import TransportError
    from bot.microsoft.http import aiohttp_transport, ssl_context

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limits = httpx.Limits(max_connections=10)
    try:
        async with httpx.AsyncClient(transport=aiohttp_transport(ssl_context(), limits)) as client:
            with pytest.raises(TransportError, match=r"network error \(ServerDisconnectedError\)"):
                await MicrosoftHttp(client).send_once("GET", f"http://127.0.0.1:{port}/", service="graph")
    finally:
        server.close()
        await server.wait_closed()
