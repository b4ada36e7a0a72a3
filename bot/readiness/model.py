"""What the readiness check reads from a tenant (a snapshot) and what it concludes (a report)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Reading(Generic[T]):
    """One fact read from Microsoft, or the honest reason it could not be read."""

    value: T | None = None
    error: str | None = None

    @property
    def known(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, reason: str) -> Reading[T]:
        return cls(value=None, error=reason)


@dataclass(frozen=True)
class TenantInfo:
    id: str
    domain: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ServicePrincipal:
    id: str
    app_id: str
    display_name: str | None
    enabled: bool


@dataclass(frozen=True)
class ConditionalAccessPolicy:
    id: str
    name: str
    state: str
    blocks: bool  # grant controls contain "block"
    targets_all_users: bool
    targets_all_apps: bool
    targets_service_principals: bool


@dataclass
class TenantSnapshot:
    """Everything the checks need, each fact with its own success or failure."""

    tenant: TenantInfo
    service_principal: Reading[ServicePrincipal | None]  # value None = not in the tenant
    # (resource appId, app role id) pairs granted to the ITDR app, resolved through the tenant's resource SPs
    app_roles: Reading[frozenset[tuple[str, str]]] = field(default_factory=lambda: Reading.failed("not read"))
    # the same grants by (resource appId, permission name), named by the tenant's own resource service principals
    app_role_names: Reading[frozenset[tuple[str, str]]] = field(default_factory=lambda: Reading.failed("not read"))
    # delegated scopes by resource appId (names, as oauth2PermissionGrants store them)
    delegated_scopes: Reading[dict[str, frozenset[str]]] = field(default_factory=lambda: Reading.failed("not read"))
    directory_roles: Reading[frozenset[str]] = field(default_factory=lambda: Reading.failed("not read"))
    p2_licensed: Reading[bool] = field(default_factory=lambda: Reading.failed("not read"))
    conditional_access: Reading[list[ConditionalAccessPolicy]] = field(
        default_factory=lambda: Reading.failed("not read")
    )
    security_defaults: Reading[bool] = field(default_factory=lambda: Reading.failed("not read"))
    audit_log_enabled: Reading[bool] = field(default_factory=lambda: Reading.failed("not read"))
    dehydrated: Reading[bool] = field(default_factory=lambda: Reading.failed("not read"))
    org_management_roles: Reading[frozenset[str]] = field(default_factory=lambda: Reading.failed("not read"))


    @classmethod
    def unreadable(cls, tenant: TenantInfo, reason: str) -> TenantSnapshot:
        """Nothing could be read (no token, Graph down): every fact carries the same honest reason."""
        failed: Reading[Any] = Reading.failed(reason)
        return cls(tenant=tenant, service_principal=failed, app_roles=failed, app_role_names=failed,
                   delegated_scopes=failed,
                   directory_roles=failed, p2_licensed=failed, conditional_access=failed, security_defaults=failed,
                   audit_log_enabled=failed, dehydrated=failed, org_management_roles=failed)


class CheckStatus(StrEnum):
    passed = "pass"
    failed = "fail"
    warn = "warn"
    unknown = "unknown"
    not_applicable = "n/a"


class Verdict(StrEnum):
    ready = "ready"
    degraded = "degraded"
    blocked = "blocked"
    unknown = "unknown"


@dataclass(frozen=True)
class CheckItem:
    id: str
    status: CheckStatus
    title: str
    detail: str
    remediation: str | None = None
    why: str | None = None  # what stops working (from the catalog's impact)
    catalog_name: str | None = None  # the catalog item this check is about, for "Explain"
    group: str = "general"  # graph | exchange | o365_management | partner_center | entra_role | ...
    blocking: bool = False  # a failure here means the integration cannot do today's job

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "title": self.title,
            "detail": self.detail,
            "remediation": self.remediation,
            "why": self.why,
            "catalog_name": self.catalog_name,
            "group": self.group,
        }


@dataclass
class Report:
    tenant: TenantInfo
    catalog_version: str
    satisfied_version: str | None
    verdict: Verdict
    items: list[CheckItem]
    round_trips: int = 0
    waves: int = 0
    duration_ms: int = 0
    cached: bool = False
    checked_at: str | None = None

    @property
    def missing(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {
            "graph": [], "exchange": [], "o365_management": [], "partner_center": [],
            "entra_role": [], "exchange_role_group": [],
        }
        for item in self.items:
            # Future-use items that are missing are warnings, but still missing.
            if item.catalog_name and item.group in groups and item.status in (CheckStatus.failed, CheckStatus.warn):
                groups[item.group].append(item.catalog_name)
        return groups

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": {"id": self.tenant.id, "domain": self.tenant.domain, "name": self.tenant.name},
            "catalog_version": self.catalog_version,
            "satisfied_version": self.satisfied_version,
            "verdict": self.verdict.value,
            "items": [item.to_json() for item in self.items],
            "missing": self.missing,
            "round_trips": self.round_trips,
            "waves": self.waves,
            "duration_ms": self.duration_ms,
            "cached": self.cached,
            "checked_at": self.checked_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        items = [
            CheckItem(
                id=raw["id"], status=CheckStatus(raw["status"]), title=raw["title"], detail=raw["detail"],
                remediation=raw.get("remediation"), why=raw.get("why"), catalog_name=raw.get("catalog_name"),
                group=raw.get("group", "general"),
            )
            for raw in data["items"]
        ]
        tenant = data["tenant"]
        return cls(
            tenant=TenantInfo(tenant["id"], tenant.get("domain"), tenant.get("name")),
            catalog_version=data["catalog_version"],
            satisfied_version=data.get("satisfied_version"),
            verdict=Verdict(data["verdict"]),
            items=items,
            round_trips=data.get("round_trips", 0),
            waves=data.get("waves", 0),
            duration_ms=data.get("duration_ms", 0),
            cached=data.get("cached", False),
            checked_at=data.get("checked_at"),
        )
