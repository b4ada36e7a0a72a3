"""What the readiness check reads from a tenant (a snapshot) and what it concludes (a report)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, computed_field

from catalog import API_LABELS, Api

# Covariant: a Reading is immutable, so a Reading[frozenset[str]] is also a Reading[object].
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Reading(Generic[T_co]):
    """One fact read from Microsoft, or the honest reason it could not be read.

    `retry_after` is set when Microsoft throttled (429) or was unavailable (503) past our retries and said
    when to come back: a background job reschedules instead of reporting the tenant as unknown.
    """

    value: T_co | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def known(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, reason: str, *, retry_after: float | None = None) -> Reading[T_co]:
        return cls(value=None, error=reason, retry_after=retry_after)


class TenantInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

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


class RoleAssignment(NamedTuple):
    """One role-management entry for the ITDR app: an active assignment or a PIM eligibility, at a scope."""

    template_id: str
    scope: str  # "/" is the whole directory; "/administrativeUnits/{id}" and others are narrower
    eligible: bool  # True: eligible only (PIM), must be activated; False: active


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
    # Role-management reads (active assignments and PIM eligibilities, any scope): they explain a role missing
    # from memberOf. Read only when they can explain something; "not read" then leaves the role plainly missing.
    role_assignments: Reading[frozenset[RoleAssignment]] = field(
        default_factory=lambda: Reading.failed("not read"))
    # Roles the app holds directory-wide only through time-bound assignments (template id → when the last one
    # ends): Huntress loses them then. Read with the role-management reads; "not read" says nothing of an end.
    role_ends: Reading[dict[str, datetime]] = field(default_factory=lambda: Reading.failed("not read"))
    p2_licensed: Reading[bool] = field(default_factory=lambda: Reading.failed("not read"))
    conditional_access: Reading[list[ConditionalAccessPolicy]] = field(
        default_factory=lambda: Reading.failed("not read")
    )
    security_defaults: Reading[bool] = field(default_factory=lambda: Reading.failed("not read"))
    audit_log_enabled: Reading[bool] = field(default_factory=lambda: Reading.failed("not read"))
    dehydrated: Reading[bool] = field(default_factory=lambda: Reading.failed("not read"))
    org_management_roles: Reading[frozenset[str]] = field(default_factory=lambda: Reading.failed("not read"))

    @classmethod
    def unreadable(cls, tenant: TenantInfo, reason: str, *, retry_after: float | None = None) -> TenantSnapshot:
        """Nothing could be read (no token, Graph down): every fact carries the same honest reason."""
        failed: Reading[Any] = Reading.failed(reason, retry_after=retry_after)
        return cls(tenant=tenant, service_principal=failed, app_roles=failed, app_role_names=failed,
                   delegated_scopes=failed, role_assignments=failed,
                   directory_roles=failed, p2_licensed=failed, conditional_access=failed, security_defaults=failed,
                   audit_log_enabled=failed, dehydrated=failed, org_management_roles=failed)

    @property
    def retry_after(self) -> float | None:
        """The longest wait Microsoft asked for on any fact it did not give, if any."""
        waits = [reading.retry_after for reading in vars(self).values()
                 if isinstance(reading, Reading) and reading.retry_after is not None]
        return max(waits) if waits else None


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


class VerdictText(NamedTuple):
    title: str
    meaning: str


#: What each verdict means, in the words every renderer uses (Slack adds an emoji, the terminal capitals).
VERDICT_TEXT: dict[Verdict, VerdictText] = {
    Verdict.ready: VerdictText("Ready", "Every check passed: the ITDR integration can do its job in this tenant."),
    Verdict.degraded: VerdictText(
        "Degraded", "Today's job works; future-use items, the P2 licence or warnings remain."
    ),
    Verdict.blocked: VerdictText(
        "Blocked", "Something the integration needs today is missing. Fix the failed items first."
    ),
    Verdict.unknown: VerdictText(
        "Could not check everything", "Some checks could not be completed, so this is not a pass."
    ),
}


class CheckGroup(StrEnum):
    """Where a check belongs in a report: one per catalog API, plus the tenant-level checks."""

    app = "general"
    graph = Api.graph.value
    exchange = Api.exchange.value
    o365_management = Api.o365_management.value
    partner_center = Api.partner_center.value
    entra_role = Api.entra_role.value
    exchange_role_group = Api.exchange_role_group.value
    exchange_org = "exchange_org"
    licence = "licence"
    policy = "policy"

    @property
    def api(self) -> Api | None:
        try:
            return Api(self.value)
        except ValueError:
            return None

    @property
    def heading(self) -> str:
        api = self.api
        return API_LABELS[api].items if api is not None else _GROUP_TITLES[self]


_GROUP_TITLES = {
    CheckGroup.app: "The ITDR app",
    CheckGroup.exchange_org: "Exchange Online organization",
    CheckGroup.licence: "Licences",
    CheckGroup.policy: "Policies",
}


class CheckItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    status: CheckStatus
    title: str
    detail: str
    remediation: str | None = None
    why: str | None = None  # what stops working (from the catalog's impact)
    catalog_name: str | None = None  # the catalog item this check is about, for "Explain"
    group: CheckGroup = CheckGroup.app
    blocking: bool = False  # a failure here means the integration cannot do today's job


class BlockingPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    targets_service_principals: bool = False


class Report(BaseModel):
    """A readiness verdict with every check behind it. The same model goes to Slack, the terminal, JSON and the
    Redis cache (and comes back from it whole)."""

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
    # Set when Microsoft throttled or was unavailable past our retries and said when to come back.
    retry_after: float | None = None
    # The ITDR app's service principal in the tenant (its object id), when it was read.
    app_object_id: str | None = None
    # Directory roles (catalog names) the app has in a form Huntress cannot use: "eligible" (PIM eligible only)
    # or the narrower scope of its active assignment (e.g. "/administrativeUnits/{id}").
    role_findings: dict[str, str] = {}
    # Directory roles (catalog names) held now but only through time-bound assignments, with when Huntress loses
    # each (ISO 8601, UTC): the check passes today and says when it will not.
    role_ends: dict[str, str] = {}
    # Enabled blocking Conditional Access policies with a broad scope (what policy.conditional_access warns of).
    blocking_policies: list[BlockingPolicy] = []

    @computed_field  # type: ignore[prop-decorator]  # mypy cannot type decorators over @property; pydantic docs
    @property
    def missing(self) -> dict[str, list[str]]:
        """Catalog names per API that the tenant lacks (future-use items included: missing is missing)."""
        groups: dict[str, list[str]] = {api.value: [] for api in Api}
        for item in self.items:
            if item.catalog_name and item.group.api is not None and item.status in (CheckStatus.failed,
                                                                                     CheckStatus.warn):
                groups[item.group.value].append(item.catalog_name)
        return groups

    @property
    def common_failure(self) -> str | None:
        """When every check that could not run failed for the same reason (no token, Graph down), that reason:
        renderers say it once instead of once per item."""
        reasons = {item.detail for item in self.items if item.status is CheckStatus.unknown}
        unknown = sum(1 for item in self.items if item.status is CheckStatus.unknown)
        return next(iter(reasons)) if len(reasons) == 1 and unknown > 1 else None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
