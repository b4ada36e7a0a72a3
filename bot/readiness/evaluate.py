"""Turning a tenant snapshot into checks and a verdict. Pure: no I/O, so every rule is tested directly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.microsoft.tenant import admin_consent_url
from bot.readiness.model import (
    BlockingPolicy,
    CheckGroup,
    CheckItem,
    CheckStatus,
    ConditionalAccessPolicy,
    Reading,
    Report,
    RoleAssignment,
    ServicePrincipal,
    TenantSnapshot,
    Verdict,
)
from catalog import Catalog, Item, Kind, Status


class Remedies:
    """Concrete fixes, built from the configured endpoints so national clouds get their own URLs."""

    def __init__(self, authority_host: str, target_app_id: str) -> None:
        self.authority_host = authority_host.rstrip("/")
        self.target_app_id = target_app_id

    def admin_consent_url(self, tenant_id: str) -> str:
        return admin_consent_url(self.authority_host, self.target_app_id, tenant_id)

    def consent(self, tenant_id: str, what: str) -> str:
        return (
            f"A Global Administrator of the tenant grants admin consent to the ITDR app ({what}): "
            f"{self.admin_consent_url(tenant_id)}"
        )

    @staticmethod
    def directory_role(item: Item, sp: ServicePrincipal | None) -> str:
        who = f"'{sp.display_name}'" if sp and sp.display_name else "the ITDR app's service principal"
        principal = sp.id if sp else "<service principal id>"
        return (
            f"Entra admin center → Roles & admins → {item.name} → Add assignments → {who}. "
            f"PowerShell: New-MgRoleManagementDirectoryRoleAssignment -PrincipalId {principal} "
            f"-RoleDefinitionId {item.ids.template_id} -DirectoryScopeId '/'"
        )

    @staticmethod
    def role_group_role(item: Item) -> str:
        return (
            "Exchange Online PowerShell: "
            f'New-ManagementRoleAssignment -SecurityGroup "Organization Management" -Role "{item.name}"'
        )


def _why(item: Item) -> str:
    return f"{item.impact.capability_title}: {item.impact.capability_summary}"


#: How an item that could not be read begins its detail (a caller saying "could not check" itself strips it).
COULD_NOT_CHECK = "Could not check: "


def _unknown(check_id: str, title: str, reason: str | None, group: CheckGroup, *, why: str | None = None,
             blocking: bool = False) -> CheckItem:
    return CheckItem(id=check_id, status=CheckStatus.unknown, title=title, detail=f"{COULD_NOT_CHECK}{reason}",
                     group=group, why=why, blocking=blocking)


def _missing_status(item: Item) -> tuple[CheckStatus, bool]:
    """A missing active item blocks today's job; a missing future-use item only degrades."""
    if item.status is Status.active:
        return CheckStatus.failed, True
    return CheckStatus.warn, False


@dataclass(frozen=True, slots=True)
class _ItemPlan:
    """What a check of one catalog item says whatever the tenant holds: built once per catalog and revision."""

    item: Item
    id: str
    title: str
    group: CheckGroup
    why: str
    missing_status: CheckStatus
    blocking: bool
    # The check's outcomes that depend on nothing but the item, made once and shared by every report (frozen).
    passed: CheckItem
    not_applicable: CheckItem

    def check(self, *, status: CheckStatus, detail: str, remediation: str | None = None,
              blocking: bool = False) -> CheckItem:
        # Built without validation: every value is typed here, and a check makes about a hundred of these.
        return CheckItem.model_construct(id=self.id, title=self.title, catalog_name=self.item.name, group=self.group,
                                         why=self.why, status=status, detail=detail, remediation=remediation,
                                         blocking=blocking)


def _item_plan(item: Item) -> _ItemPlan:
    check_id, title = f"{item.api.value}.{item.name}", f"{item.name} ({item.api_title} {item.kind_title})"
    group, why = _GROUPS[item.api.value], _why(item)
    missing_status, blocking = _missing_status(item)
    return _ItemPlan(
        item=item, id=check_id, title=title, group=group, why=why, missing_status=missing_status, blocking=blocking,
        passed=CheckItem(id=check_id, title=title, catalog_name=item.name, group=group, why=why,
                         status=CheckStatus.passed, detail=_FOUND_TEXT[item.kind][0]),
        not_applicable=CheckItem(id=check_id, title=title, catalog_name=item.name, group=group, why=why,
                                 status=CheckStatus.not_applicable,
                                 detail="CPV integrations only; CPV mode is not configured (ITDR_CPV_MODE)."),
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """A revision's checks and, for its satisfied revision, which items each revision needs (with and without
    CPV): the same for every tenant, so built once instead of on every check."""

    items: tuple[_ItemPlan, ...]
    p2_why: str
    needed: dict[bool, tuple[tuple[str, tuple[Item, ...]], ...]]  # cpv_mode -> (revision, its items) in order
    considered: dict[bool, tuple[Item, ...]]  # cpv_mode -> every item some revision needs, once


_GROUPS = {group.value: group for group in CheckGroup}
# Plans per catalog (by identity, the catalog kept alongside so its id cannot be reused) and revision.
_plans: dict[tuple[int, str], tuple[Catalog, _Plan]] = {}


def _plan(catalog: Catalog, version: str) -> _Plan:
    entry = _plans.get((id(catalog), version))
    if entry is not None and entry[0] is catalog:
        return entry[1]
    items = tuple(_item_plan(item) for item in catalog.items_at(version))
    dependent = [plan.item.name for plan in items if plan.item.p2_only]
    needed: dict[bool, tuple[tuple[str, tuple[Item, ...]], ...]] = {}
    considered: dict[bool, tuple[Item, ...]] = {}
    for cpv_mode in (False, True):
        needed[cpv_mode] = tuple(
            (revision.version, tuple(item for item in catalog.items_at(revision.version)
                                     if cpv_mode or not item.cpv_only))
            for revision in catalog.revisions
        )
        considered[cpv_mode] = tuple({item.name: item for _, its in needed[cpv_mode] for item in its}.values())
    plan = _Plan(items=items, needed=needed, considered=considered,
                 p2_why=f"Only the P2-only items depend on it: {', '.join(dependent)} (Microsoft risk-based alerts).")
    if len(_plans) > 64:  # a process holds one catalog; tests load a few
        _plans.clear()
    _plans[(id(catalog), version)] = (catalog, plan)
    return plan


def evaluate(
    snapshot: TenantSnapshot,
    catalog: Catalog,
    version: str,
    remedies: Remedies,
    *,
    cpv_mode: bool = False,
) -> Report:
    revision = catalog.revision(version)
    tenant_id = snapshot.tenant.id
    items: list[CheckItem] = []
    sp_reading = snapshot.service_principal
    sp = sp_reading.value

    # 1. The service principal: nothing else can be granted without it.
    if not sp_reading.known:
        items.append(_unknown("service_principal", "ITDR app present in the tenant", sp_reading.error, CheckGroup.app,
                              blocking=True))
    elif sp is None:
        items.append(CheckItem(
            id="service_principal", status=CheckStatus.failed, title="ITDR app present in the tenant",
            detail="The ITDR app has no service principal in this tenant: it was never consented or was deleted.",
            remediation=remedies.consent(tenant_id, "this creates the service principal and grants permissions"),
            why="Without it the integration cannot sign in to the tenant at all.", blocking=True,
        ))
    elif not sp.enabled:
        items.append(CheckItem(
            id="service_principal", status=CheckStatus.failed, title="ITDR app enabled in the tenant",
            detail=f"The service principal '{sp.display_name}' exists but is disabled (accountEnabled=false).",
            remediation="Entra admin center → Enterprise applications → the ITDR app → Properties → "
                        "Enabled for users to sign in: Yes.",
            why="A disabled service principal cannot get tokens, so every ITDR function stops.", blocking=True,
        ))
    else:
        items.append(CheckItem(
            id="service_principal", status=CheckStatus.passed, title="ITDR app present in the tenant",
            detail=f"'{sp.display_name}' is present and enabled (object id {sp.id}).",
        ))
    no_sp = sp_reading.known and sp is None

    plan = _plan(catalog, revision.version)
    # Whether the tenant grants each item (and under which alias), decided once per item for the checks and the
    # satisfied revision alike.
    facts = {item.name: _fact(item, snapshot) for item in plan.considered[cpv_mode]}

    # 2. Permissions and roles, item by item.
    unusable = _unusable_roles(snapshot)
    ends = snapshot.role_ends.value if snapshot.role_ends.known and snapshot.role_ends.value else {}
    role_findings: dict[str, str] = {}
    role_ends: dict[str, str] = {}
    for item_plan in plan.items:
        fact = facts.get(item_plan.item.name, (None, None))  # absent only for CPV-only items, not applicable
        template = item_plan.item.ids.template_id or ""
        finding = unusable.get(template) if fact[0] is False else None
        if finding is not None:
            role_findings[item_plan.item.name] = finding
        check_item = _check_item(item_plan, fact, snapshot, remedies, tenant_id, sp, no_sp=no_sp,
                                 cpv_mode=cpv_mode, finding=finding)
        if (end := ends.get(template)) is not None and check_item.status is CheckStatus.passed:
            role_ends[item_plan.item.name] = end.isoformat()
            check_item = check_item.model_copy(update={"detail": ends_text(end)})
        items.append(check_item)

    # 3. Exchange prerequisites.
    items.append(_boolean_check(
        "exchange.audit_log", "Unified audit log ingestion", snapshot.audit_log_enabled, want=True,
        ok="Unified audit log ingestion is on.",
        bad="Unified audit log ingestion is off, so no audit events are recorded for Huntress to read.",
        remediation="Exchange Online PowerShell: Set-AdminAuditLogConfig -UnifiedAuditLogIngestionEnabled $true "
                    "(events can take up to 24 hours to flow afterwards).",
        why="Log and event ingest: the Office 365 Management API has nothing to deliver without the audit log.",
        blocking=True,
    ))
    items.append(_boolean_check(
        "exchange.hydration", "Exchange organization customization (hydration)", snapshot.dehydrated, want=False,
        ok="The organization is hydrated (customization enabled).",
        bad="The Exchange organization is dehydrated: audit and role changes cannot be made until it is hydrated.",
        remediation="Exchange Online PowerShell: Enable-OrganizationCustomization (then re-check after a few "
                    "minutes).",
        why="Huntress cannot enable auditing or restore roles in a dehydrated organization.",
        blocking=True,
    ))

    # 4. Licence and policies that only warn.
    items.append(_p2_check(snapshot, plan.p2_why))
    items.extend(_policy_checks(snapshot))
    policies = snapshot.conditional_access.value if snapshot.conditional_access.known else None

    verdict = _verdict(items)
    return Report(
        tenant=snapshot.tenant,
        catalog_version=revision.version,
        # A disabled (or absent) app gets no token: its grants satisfy nothing until it is enabled.
        satisfied_version=_satisfied_version(plan, facts, cpv_mode) if sp is not None and sp.enabled else None,
        verdict=verdict,
        items=items,
        retry_after=snapshot.retry_after,
        app_object_id=sp.id if sp is not None else None,
        role_findings=role_findings,
        role_ends=role_ends,
        blocking_policies=[BlockingPolicy(id=p.id, name=p.name, targets_service_principals=p.targets_service_principals)
                           for p in _blocking(policies or [])],
    )


#: What a role finding says, the same words for the report and the fix plan.
ELIGIBLE_ONLY = "eligible"


def _unusable_roles(snapshot: TenantSnapshot) -> dict[str, str]:
    """Roles the app has in a form Huntress cannot use, by template id: eligible only (PIM) at any scope, or active
    at a scope narrower than the directory. An active directory-wide assignment is simply held."""
    reading = snapshot.role_assignments
    if not reading.known or not reading.value:
        return {}
    found: dict[str, str] = {}
    entries: frozenset[RoleAssignment] = reading.value
    for entry in sorted(entries, key=lambda e: (e.eligible, e.scope)):  # an active scoped one names its scope
        if entry.eligible or entry.scope != "/":
            found.setdefault(entry.template_id, ELIGIBLE_ONLY if entry.eligible else entry.scope)
    return found


def when_text(end: datetime | str) -> str:
    """An end as people read it: "2026-12-20 14:00 UTC" (from a datetime or the report's ISO 8601)."""
    moment = datetime.fromisoformat(end) if isinstance(end, str) else end
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def ends_text(end: datetime) -> str:
    """What a role held through a time-bound assignment says (the check passes today)."""
    return (f"Held until {when_text(end)}, through a time-bound assignment: Huntress loses it then unless the "
            "assignment is made permanent.")


def finding_text(finding: str) -> str:
    if finding == ELIGIBLE_ONLY:
        return "Eligible only (PIM): Huntress needs an active, permanent assignment."
    return (f"Assigned only at the scope {finding} (narrower than the directory): Huntress needs the role "
            "directory-wide (scope /).")


# Whether an item is held (None: could not be read) and, when not, a revision's other name it is granted under.
_Fact = tuple[bool | None, str | None]


def _fact(item: Item, snapshot: TenantSnapshot) -> _Fact:
    held = holds(item, snapshot)
    return held, (None if held is True else _granted_alias(item, snapshot))


def holds(item: Item, snapshot: TenantSnapshot) -> bool | None:
    """Whether the tenant grants `item` to the ITDR app; None when the fact could not be read."""
    sp = snapshot.service_principal
    if item.kind is not Kind.role_group_role and sp.known and sp.value is None:
        return False  # nothing can be granted to an app that is not in the tenant
    reading = _reading_for(item, snapshot)
    if not reading.known or reading.value is None:
        return None
    held: Any = reading.value
    resource = item.ids.resource_app_id or ""
    match item.kind:
        case Kind.directory_role:
            return item.ids.template_id in held
        case Kind.role_group_role:
            return item.name in held
        case Kind.application_permission:
            names = snapshot.app_role_names.value if snapshot.app_role_names.known else None
            return (resource, item.ids.application_id) in held or (resource, item.name) in (names or frozenset())
        case _:
            return item.name in held.get(resource, frozenset())


def _granted_alias(item: Item, snapshot: TenantSnapshot) -> str | None:
    named = snapshot.app_role_names
    if item.kind is not Kind.application_permission or not named.known or not named.value:
        return None
    return next((alias for alias in item.aliases if (item.ids.resource_app_id, alias) in named.value), None)


_FOUND_TEXT = {
    Kind.directory_role: ("The ITDR app holds this role.", "The ITDR app does not hold this role."),
    Kind.role_group_role: ("The Organization Management role group has this role.",
                           "The Organization Management role group lacks this role."),
    Kind.application_permission: ("Granted (admin consent present).", "Not granted to the ITDR app."),
    Kind.delegated_permission: ("Delegated grant present.", "No delegated grant for this scope."),
}


def _reading_for(item: Item, snapshot: TenantSnapshot) -> Reading[object]:
    """The fact that decides `item` (the app's own grants all depend on reading its service principal)."""
    if not snapshot.service_principal.known and item.kind is not Kind.role_group_role:
        return snapshot.service_principal
    reading: Reading[object] = getattr(snapshot, _READING_BY_KIND[item.kind])
    return reading


_READING_BY_KIND = {
    Kind.directory_role: "directory_roles",
    Kind.role_group_role: "org_management_roles",
    Kind.application_permission: "app_roles",
    Kind.delegated_permission: "delegated_scopes",
}


def _check_item(
    plan: _ItemPlan,
    fact: _Fact,
    snapshot: TenantSnapshot,
    remedies: Remedies,
    tenant_id: str,
    sp: ServicePrincipal | None,
    *,
    no_sp: bool,
    cpv_mode: bool,
    finding: str | None = None,
) -> CheckItem:
    item = plan.item
    check = plan.check
    if item.cpv_only and not cpv_mode:
        return plan.not_applicable
    missing_status, blocking = plan.missing_status, plan.blocking
    held, alias = fact
    if held is None:
        reason = _reading_for(item, snapshot).error or "no data"
        return check(status=CheckStatus.unknown, detail=f"{COULD_NOT_CHECK}{reason}", blocking=blocking)
    if held:
        return plan.passed
    if alias:
        # The document names this permission differently in a revision (v2's IdentityRiskyUser.ReadWrite.All):
        # a grant under that name is the vendor's own request, so it counts, and the report says so.
        return check(status=CheckStatus.passed,
                     detail=f"Granted as {alias}, the name a revision of the document uses for it (a superset of "
                            f"{item.name}); see the catalog's discrepancy note.")
    missing_text = _FOUND_TEXT[item.kind][1] if finding is None else finding_text(finding)
    if no_sp and item.kind is Kind.directory_role:
        missing_text = "Not assigned: the ITDR app is not in the tenant."
        remediation = "After admin consent (see the first item), assign the role: " + remedies.directory_role(item, sp)
    elif no_sp and item.kind is not Kind.role_group_role:
        missing_text = "Not granted: the ITDR app is not in the tenant."
        remediation = remedies.consent(tenant_id, "creates the app and grants its permissions")
    elif item.kind is Kind.directory_role:
        remediation = remedies.directory_role(item, sp)
    elif item.kind is Kind.role_group_role:
        remediation = remedies.role_group_role(item)
    else:
        remediation = remedies.consent(tenant_id, f"includes {item.name}")
    if item.status is Status.future:
        missing_text += " It is for future use, so nothing breaks today."
    return check(status=missing_status, detail=missing_text, remediation=remediation, blocking=blocking)


def _boolean_check(
    check_id: str, title: str, reading: Reading[bool], *, want: bool, ok: str, bad: str, remediation: str,
    why: str, blocking: bool,
) -> CheckItem:
    if not reading.known or reading.value is None:
        return _unknown(check_id, title, reading.error, CheckGroup.exchange_org, why=why, blocking=blocking)
    if reading.value == want:
        return CheckItem(id=check_id, status=CheckStatus.passed, title=title, detail=ok, group=CheckGroup.exchange_org)
    return CheckItem(id=check_id, status=CheckStatus.failed, title=title, detail=bad, remediation=remediation,
                     why=why, group=CheckGroup.exchange_org, blocking=blocking)


def _p2_check(snapshot: TenantSnapshot, why: str) -> CheckItem:
    title = "Microsoft Entra ID P2 licence"
    reading = snapshot.p2_licensed
    if not reading.known or reading.value is None:
        return _unknown("licence.p2", title, reading.error, CheckGroup.licence, why=why)
    if reading.value:
        return CheckItem(id="licence.p2", status=CheckStatus.passed, title=title,
                         detail="An enabled Entra ID P2 service plan is present.", group=CheckGroup.licence)
    return CheckItem(
        id="licence.p2", status=CheckStatus.warn, title=title,
        detail="No enabled Entra ID P2 service plan (AAD_PREMIUM_P2): risk-based alerts will not be ingested.",
        remediation="Add Microsoft Entra ID P2 (alone or in a suite such as Microsoft 365 E5) to the tenant.",
        why=why, group=CheckGroup.licence,
    )


def _policy_checks(snapshot: TenantSnapshot) -> list[CheckItem]:
    checks: list[CheckItem] = []
    why = "A policy that blocks sign-ins or workload identities can stop onboarding or the app's own access."
    reading = snapshot.conditional_access
    title = "Conditional Access policies that could block onboarding"
    if not reading.known or reading.value is None:
        checks.append(_unknown("policy.conditional_access", title, reading.error, CheckGroup.policy, why=why))
    else:
        risky = _blocking(reading.value)
        if risky:
            names = ", ".join(f"'{policy.name}'" for policy in risky)
            checks.append(CheckItem(
                id="policy.conditional_access", status=CheckStatus.warn, title=title,
                detail=f"{len(risky)} enabled blocking polic{'y' if len(risky) == 1 else 'ies'} with a broad "
                       f"scope: {names}.",
                remediation="Entra admin center → Protection → Conditional Access: review these policies and "
                            "exclude the onboarding admin (and the ITDR service principal where targeted).",
                why=why, group=CheckGroup.policy,
            ))
        else:
            checks.append(CheckItem(id="policy.conditional_access", status=CheckStatus.passed, title=title,
                                    detail="No enabled blocking policy with a broad scope.", group=CheckGroup.policy))
    defaults = snapshot.security_defaults
    title = "Security Defaults"
    if not defaults.known or defaults.value is None:
        checks.append(_unknown("policy.security_defaults", title, defaults.error, CheckGroup.policy))
    elif defaults.value:
        checks.append(CheckItem(
            id="policy.security_defaults", status=CheckStatus.warn, title=title,
            detail="Security Defaults are on: the admin who onboards must complete MFA, and Conditional Access "
                   "policies cannot be used alongside them.",
            remediation="Make sure the onboarding Global Administrator has MFA registered before consenting.",
            group=CheckGroup.policy,
        ))
    else:
        checks.append(CheckItem(id="policy.security_defaults", status=CheckStatus.passed, title=title,
                                detail="Security Defaults are off.", group=CheckGroup.policy))
    return checks


def _blocking(policies: list[ConditionalAccessPolicy]) -> list[ConditionalAccessPolicy]:
    return [policy for policy in policies
            if policy.state == "enabled" and policy.blocks
            and (policy.targets_all_users or policy.targets_all_apps or policy.targets_service_principals)]


def _verdict(items: list[CheckItem]) -> Verdict:
    # A certain blocking failure wins even when other checks could not run; otherwise a check that could not
    # run makes the verdict unknown: a Microsoft fault must never read as "ready".
    if any(item.status is CheckStatus.failed and item.blocking for item in items):
        return Verdict.blocked
    if any(item.status is CheckStatus.unknown for item in items):
        return Verdict.unknown
    if any(item.status in (CheckStatus.failed, CheckStatus.warn) for item in items):
        return Verdict.degraded
    return Verdict.ready


def _satisfied_version(plan: _Plan, facts: dict[str, _Fact], cpv_mode: bool) -> str | None:
    """The newest revision whose every (non-CPV, unless CPV mode) item the tenant grants."""
    satisfied = None
    for version, needed in plan.needed[cpv_mode]:
        if all(facts[item.name][0] is True or facts[item.name][1] for item in needed):
            satisfied = version
    return satisfied
