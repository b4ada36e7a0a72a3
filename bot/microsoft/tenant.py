"""Tenant input validation.

Whatever a Slack user types ends up in a login URL, a Graph/Exchange path and sometimes an OData
filter, so it is validated here, once, before any of that happens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlencode

from bot.microsoft.errors import InvalidTenant

_FRIENDLY = (
    "That doesn't look like a Microsoft 365 tenant. Use the tenant ID (a GUID such as "
    "`72f988bf-86f1-41af-91ab-2d7cd011db47`) or a verified domain such as `contoso.onmicrosoft.com`."
)

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE)
# One DNS label (RFC 1123): letters, digits, inner hyphens, 1-63 chars.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
# A TLD is alphabetic or an IDN A-label; this also rules out bare IPv4 addresses.
_TLD = re.compile(r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})", re.ASCII)
# Slack may wrap a typed domain as <http://contoso.com|contoso.com>; accept only that exact shape.
_SLACK_LINK = re.compile(r"<(?:https?://)?([^|<>\s]+)(?:\|([^|<>\s]+))?>", re.ASCII)
# Entra's meta-tenants are not a customer tenant; `common` with client credentials is also unreliable.
_RESERVED = frozenset({"common", "organizations", "consumers"})
_MAX_INPUT = 512


@dataclass(frozen=True, slots=True)
class TenantRef:
    """A validated tenant: a lowercase GUID or a lowercase DNS domain. Safe to put in URLs."""

    value: str
    kind: Literal["guid", "domain"]

    @property
    def is_guid(self) -> bool:
        return self.kind == "guid"

    def __str__(self) -> str:
        return self.value


def _reject(reason: str) -> InvalidTenant:
    return InvalidTenant(_FRIENDLY, reason=reason)


def parse_tenant(text: str | TenantRef) -> TenantRef:
    """Parse user input into a TenantRef or raise InvalidTenant with a friendly message."""
    if isinstance(text, TenantRef):
        return text
    if not isinstance(text, str):
        raise _reject("not a string")
    if len(text) > _MAX_INPUT:
        raise _reject("too long")
    candidate = text.strip()
    link = _SLACK_LINK.fullmatch(candidate)
    if link:
        candidate = link.group(2) or link.group(1)
    if not candidate:
        raise _reject("empty")
    # Reject anything non-ASCII up front: homoglyphs, full-width dots, zero-width characters and
    # bidi controls all live there. IDN domains must be typed in their xn-- form.
    if not candidate.isascii():
        raise _reject("non-ascii")
    if not candidate.isprintable():
        raise _reject("control characters")
    candidate = candidate.lower()
    if _GUID.fullmatch(candidate):
        return TenantRef(candidate, "guid")
    if candidate.endswith("."):
        candidate = candidate[:-1]  # a fully qualified name with the root dot is the same domain
    if len(candidate) > 253:
        raise _reject("domain longer than 253 characters")
    if candidate in _RESERVED:
        raise _reject("reserved tenant alias")
    labels = candidate.split(".")
    if len(labels) < 2:
        raise _reject("not a domain (needs a dot)")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise _reject("invalid domain label")
    if not _TLD.fullmatch(labels[-1]):
        raise _reject("invalid top-level domain")
    return TenantRef(candidate, "domain")


def is_guid(text: str) -> bool:
    return bool(_GUID.fullmatch(text))


def admin_consent_url(
    authority_host: str, client_id: str, tenant_id: str, *, state: str | None = None, redirect_uri: object = None
) -> str:
    """Microsoft's v1 admin-consent link: it grants every permission configured on the app registration at once.
    The one place it is built (readiness remedies print it bare; consent cards add a signed `state` and the
    registered `redirect_uri`). Shapes: /work/shared/reference/microsoft-apis.md §7 (Microsoft's v2-admin-consent
    doc)."""
    query = {"client_id": client_id}
    if state is not None:
        query["state"] = state
    if redirect_uri is not None:
        query["redirect_uri"] = str(redirect_uri)
    return f"{authority_host.rstrip('/')}/{quote(tenant_id, safe='')}/adminconsent?{urlencode(query)}"
