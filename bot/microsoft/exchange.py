"""Exchange Online admin API (the REST endpoint behind EXO PowerShell V3): InvokeCommand."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from bot.microsoft.errors import MicrosoftError
from bot.microsoft.http import MicrosoftHttp, collect_pages
from bot.microsoft.tenant import TenantRef
from bot.microsoft.tokens import Resource, TokenProvider
from bot.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "exchange"
# Routes app-only calls to the tenant's system mailbox (as EXO PowerShell does).
ANCHOR_MAILBOX = "APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant}"
_CMDLET = re.compile(r"[A-Z][A-Za-z]+-[A-Z][A-Za-z0-9]+", re.ASCII)
_PROPERTY = re.compile(r"[A-Za-z][A-Za-z0-9_]*", re.ASCII)


def _get(mapping: Any, *names: str) -> Any:
    """Case-insensitive key lookup: EXO spells innererror/internalException inconsistently."""
    if not isinstance(mapping, Mapping):
        return None
    lowered = {str(k).lower(): v for k, v in mapping.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def parse_exchange_error(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message): error.details[].message, else innererror.internalException.message, else error.message."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return None, text[:300] if text and len(text) < 300 else f"HTTP {response.status_code}"
    error = _get(body, "error")
    if not isinstance(error, Mapping):
        return None, f"HTTP {response.status_code}"
    code = _get(error, "code")
    details = _get(error, "details")
    if isinstance(details, list):
        messages = [str(_get(d, "message")) for d in details if _get(d, "message")]
        if messages:
            return code, "; ".join(messages)
    internal = _get(_get(_get(error, "innererror"), "internalException"), "message")
    if internal:
        return code, str(internal)
    return code, str(_get(error, "message") or f"HTTP {response.status_code}")


class ExchangeClient:
    def __init__(self, http: MicrosoftHttp, tokens: TokenProvider, settings: Settings, *, max_pages: int = 100) -> None:
        self._http = http
        self._tokens = tokens
        self._base = f"{settings.exchange_url}/adminapi/beta"
        self._max_pages = max_pages

    async def invoke(
        self,
        tenant_id: TenantRef | str,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        select: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Run a cmdlet and return its output objects (all pages)."""
        if not _CMDLET.fullmatch(cmdlet):
            raise ValueError(f"not a cmdlet name: {cmdlet[:60]!r}")
        if select and not all(_PROPERTY.fullmatch(p) for p in select):
            raise ValueError("select must be plain property names")
        token = await self._tokens.get_token(tenant_id, Resource.EXCHANGE)
        # The URL and anchor mailbox want the GUID; the token call above already resolved it.
        tenant = await self._tokens.tenant_id(tenant_id)
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "X-AnchorMailbox": ANCHOR_MAILBOX.format(tenant=tenant),
            "X-ResponseFormat": "json",
            "X-SerializationLevel": "Partial",
            "Prefer": "odata.maxpagesize=1000",
            "Connection-Id": str(uuid.uuid4()),
        }
        payload = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": dict(parameters or {})}}
        # $select goes into the first URL as text (the names are checked above): httpx would merge a params mapping
        # into the URL, parsing it again, on every request. A nextLink carries its own query.
        query = f"?$select={','.join(select)}" if select else ""

        async def page(url: str) -> dict[str, Any]:
            response = await self._http.request("POST", url, service=SERVICE, headers=headers, json=payload,
                                                error_parser=parse_exchange_error)
            body = response.json()
            if not isinstance(body, dict):
                raise MicrosoftError(f"{SERVICE}: unexpected response shape from {cmdlet}")
            if warnings := body.get("@adminapi.warnings"):
                log.info("%s %s warnings: %s", SERVICE, cmdlet, "; ".join(map(str, warnings))[:500])
            return body

        return await collect_pages(f"{self._base}/{tenant}/InvokeCommand{query}", page, base=self._base,
                                   service=SERVICE, max_pages=self._max_pages)
