"""Office 365 Management Activity API: subscription listing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.microsoft.errors import (
    ApiError,
    ManagementApiError,
    ManagementPermissionDenied,
    ManagementSubscriptionDisabled,
    ManagementSubscriptionMissing,
    ManagementTenantError,
    MicrosoftError,
    api_error_class,
)
from bot.microsoft.http import MicrosoftHttp
from bot.microsoft.tenant import TenantRef
from bot.microsoft.tokens import Resource, TokenProvider
from bot.settings import Settings

SERVICE = "management"

_AF_CODES: dict[str, type[ManagementApiError]] = {
    "AF10001": ManagementPermissionDenied,
    "AF20010": ManagementTenantError,
    "AF20011": ManagementTenantError,
    "AF20012": ManagementTenantError,
    "AF20013": ManagementTenantError,
    "AF20022": ManagementSubscriptionMissing,
    "AF20023": ManagementSubscriptionDisabled,
}
# AF50000 is documented as an internal error worth retrying, so 500 joins the usual set here.
_RETRY_STATUSES = frozenset({429, 500, 503, 504})


def management_error_class(status: int, code: str | None) -> type[ApiError]:
    if code in _AF_CODES:
        return _AF_CODES[code]
    if status in (429,) or status >= 500:
        return api_error_class(status)
    return ManagementApiError


class ManagementClient:
    def __init__(self, http: MicrosoftHttp, tokens: TokenProvider, settings: Settings) -> None:
        self._http = http
        self._tokens = tokens
        self._base = f"{settings.management_url}/api/v1.0"
        # Our own (publisher) tenant GUID: Microsoft meters quota per publisher when it is sent.
        self._publisher = settings.itdr_publisher_identifier

    async def list_subscriptions(self, tenant_id: TenantRef | str) -> list[dict[str, Any]]:
        """[{"contentType": "Audit.Exchange", "status": "enabled", "webhook": ...}, ...]"""
        token = await self._tokens.get_token(tenant_id, Resource.MANAGEMENT)
        tenant = await self._tokens.tenant_id(tenant_id)  # the API insists on the GUID (AF20013)
        params = {"PublisherIdentifier": self._publisher} if self._publisher else None
        response = await self._http.request(
            "GET",
            f"{self._base}/{tenant}/activity/feed/subscriptions/list",
            service=SERVICE,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            params=params,
            error_class=management_error_class,
            retry_statuses=_RETRY_STATUSES,
        )
        body = response.json()
        if not isinstance(body, list):
            raise MicrosoftError(f"{SERVICE}: unexpected response shape from subscriptions/list")
        return [item for item in body if isinstance(item, Mapping)]


__all__ = ["ManagementClient", "management_error_class"]
