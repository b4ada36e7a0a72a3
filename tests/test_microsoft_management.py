"""Management Activity API: subscriptions/list and AF error codes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from bot.microsoft import (
    ManagementApiError,
    ManagementPermissionDenied,
    ManagementSubscriptionDisabled,
    ManagementSubscriptionMissing,
    ManagementTenantError,
    MicrosoftClients,
    ServiceUnavailable,
)
from tests.fakes.microsoft import FakeMicrosoft, SleepRecorder, TenantScenario, running_fake

TENANT = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
PUBLISHER = "c0ffee00-0000-4000-8000-000000000001"
SUBSCRIPTIONS = [
    {"contentType": "Audit.Exchange", "status": "enabled", "webhook": None},
    {"contentType": "Audit.AzureActiveDirectory", "status": "disabled", "webhook": None},
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMicrosoft]:
    with running_fake() as fake:
        fake.add_tenant(TenantScenario(TENANT, domains=["contoso.onmicrosoft.com"], subscriptions=SUBSCRIPTIONS))
        yield fake


@pytest.fixture
async def ms(fake: FakeMicrosoft) -> AsyncIterator[MicrosoftClients]:
    fake.clear()
    clients = MicrosoftClients(fake.settings(itdr_publisher_identifier=PUBLISHER), sleep=SleepRecorder())
    yield clients
    await clients.aclose()


async def test_list_subscriptions(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    assert await ms.management.list_subscriptions("contoso.onmicrosoft.com") == SUBSCRIPTIONS
    [request] = fake.recorded("management")
    assert request.path == f"/api/v1.0/{TENANT}/activity/feed/subscriptions/list"  # GUID, never the domain
    assert request.query == {"PublisherIdentifier": PUBLISHER}


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("AF10001", ManagementPermissionDenied),
        ("AF20011", ManagementTenantError),
        ("AF20022", ManagementSubscriptionMissing),
        ("AF20023", ManagementSubscriptionDisabled),
        ("AF20031", ManagementApiError),
    ],
)
async def test_af_codes_become_typed_errors(
    ms: MicrosoftClients, fake: FakeMicrosoft, code: str, error: type[ManagementApiError]
) -> None:
    tid = str(uuid.uuid4())
    fake.add_tenant(TenantScenario(tid, domains=[f"t{tid[:8]}.onmicrosoft.com"], management_error=code))
    with pytest.raises(error) as info:
        await ms.management.list_subscriptions(tid)
    assert type(info.value) is error
    assert info.value.code == code


async def test_internal_error_is_retried_then_typed(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    tid = str(uuid.uuid4())
    fake.add_tenant(TenantScenario(tid, domains=[f"t{tid[:8]}.onmicrosoft.com"], management_error="AF50000"))
    with pytest.raises(ServiceUnavailable):
        await ms.management.list_subscriptions(tid)
    assert len(fake.recorded("management")) == 5


async def test_af429_is_retried(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    fake.throttle("subscriptions/list", service="management", retry_after=2)
    assert await ms.management.list_subscriptions(TENANT) == SUBSCRIPTIONS
    assert [r.status for r in fake.recorded("management")] == [429, 200]
