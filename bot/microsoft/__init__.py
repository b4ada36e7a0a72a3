"""Microsoft access layer: tokens, Graph and the Exchange admin API.

Everything that touches httpx or msal lives in this package; callers use `MicrosoftClients`:

    async with MicrosoftClients(settings) as ms:
        tenant = parse_tenant(user_text)                     # raises InvalidTenant
        with track_round_trips() as trips:
            sp = await ms.graph(tenant).get("/servicePrincipals(appId='...')")
            results = await ms.graph(tenant).batch({"org": "/organization", "skus": "/subscribedSkus"})
            audit = await ms.exchange.invoke(tenant, "Get-AdminAuditLogConfig")
        trips.total, trips.by_service
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import httpx

from bot.microsoft.errors import (
    ApiError,
    AppNotInTenant,
    BadClientSecret,
    BadRequest,
    ConfigurationError,
    ConsentRequired,
    Forbidden,
    InvalidTenant,
    MicrosoftError,
    MissingServicePrincipal,
    NotFound,
    ServiceUnavailable,
    TenantNotFound,
    Throttled,
    TokenError,
    TransportError,
    Unauthorized,
)
from bot.microsoft.exchange import ExchangeClient
from bot.microsoft.graph import GraphClient, SubRequest, SubResponse, odata_string
from bot.microsoft.http import (
    MicrosoftHttp,
    Priority,
    RetryPolicy,
    RoundTrips,
    Sleep,
    build_async_client,
    track_round_trips,
)
from bot.microsoft.tenant import TenantRef, parse_tenant
from bot.microsoft.tokens import Resource, TokenProvider
from bot.settings import Settings


class MicrosoftClients:
    """One per process (or per worker): shares the httpx clients (one for Graph, one for Exchange) and the msal apps
    across tenants."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Sleep = asyncio.sleep,
        retry_policy: RetryPolicy | None = None,
        tokens: TokenProvider | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_apps: int = 512,
    ) -> None:
        self.settings = settings
        self.tokens = tokens or TokenProvider(settings, max_apps=max_apps)
        self._owns_client = http_client is None
        # Graph and Exchange each get a connection pool of their own: httpcore (still the transport behind a proxy)
        # walks every connection of a pool on each request, so one pool for both hosts would cost more CPU.
        timeout = settings.itdr_http_timeout_seconds
        self.http = MicrosoftHttp(http_client or build_async_client(timeout), policy=retry_policy, sleep=sleep)
        self.exchange_http = MicrosoftHttp(http_client or build_async_client(timeout), policy=retry_policy, sleep=sleep)
        self.exchange = ExchangeClient(self.exchange_http, self.tokens, settings)

    def graph(self, tenant: TenantRef | str, *, priority: Priority | None = None, version: str = "v1.0") -> GraphClient:
        """A Graph client bound to one tenant; `priority` sets x-ms-throttle-priority (low/normal/high)."""
        return GraphClient(self.http, self.tokens, self.settings, tenant, priority=priority, version=version)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.http.client.aclose()
            await self.exchange_http.client.aclose()
        self.tokens.close()

    async def __aenter__(self) -> MicrosoftClients:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


__all__ = [
    "ApiError",
    "AppNotInTenant",
    "BadClientSecret",
    "BadRequest",
    "ConfigurationError",
    "ConsentRequired",
    "ExchangeClient",
    "Forbidden",
    "GraphClient",
    "InvalidTenant",
    "MicrosoftClients",
    "MicrosoftError",
    "MicrosoftHttp",
    "MissingServicePrincipal",
    "NotFound",
    "Resource",
    "RetryPolicy",
    "RoundTrips",
    "ServiceUnavailable",
    "SubRequest",
    "SubResponse",
    "TenantNotFound",
    "TenantRef",
    "Throttled",
    "TokenError",
    "TokenProvider",
    "TransportError",
    "Unauthorized",
    "odata_string",
    "parse_tenant",
    "track_round_trips",
]
