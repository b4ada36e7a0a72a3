"""From "missing" to "fixed": a readiness report turned into ordered steps, each with who can do it, how (exact
commands with the tenant's real ids, the portal path) and Microsoft's documented wait. Pure: no I/O.

Every command and wait cites Microsoft's documentation (the URLs below); where Microsoft documents no wait, the
step says "not documented" instead of guessing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from bot.readiness.evaluate import COULD_NOT_CHECK, ELIGIBLE_ONLY, when_text
from bot.readiness.model import CheckGroup, CheckItem, CheckStatus, Report, Verdict
from catalog import Catalog, Item
from catalog.words import counted

# Microsoft's documentation behind each command, role and wait.
SOURCES = {
    "admin_consent": "https://learn.microsoft.com/entra/identity/enterprise-apps/grant-admin-consent",
    "replication": "https://learn.microsoft.com/graph/api/serviceprincipal-list-approleassignments",
    "role_assignment": "https://learn.microsoft.com/graph/api/rbacapplication-post-roleassignments",
    "role_assignment_ps": "https://learn.microsoft.com/powershell/module/microsoft.graph.identity.governance/"
                          "new-mgrolemanagementdirectoryroleassignment",
    "eligibility": "https://learn.microsoft.com/graph/api/rbacapplication-list-roleeligibilityschedules",
    "hydration": "https://learn.microsoft.com/powershell/module/exchange/enable-organizationcustomization",
    "audit_log": "https://learn.microsoft.com/powershell/module/exchange/set-adminauditlogconfig",
    "role_group": "https://learn.microsoft.com/powershell/module/exchange/new-managementroleassignment",
    "conditional_access": "https://learn.microsoft.com/graph/api/conditionalaccesspolicy-update",
    "security_defaults": "https://learn.microsoft.com/entra/fundamentals/security-defaults",
}
NOT_DOCUMENTED = "not documented"


class Action(StrEnum):
    consent = "consent"
    directory_role = "directory_role"
    exchange = "exchange"
    conditional_access = "conditional_access"
    licence = "licence"
    security_defaults = "security_defaults"


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    items: list[str]  # catalog names, or the check's title for tenant-level findings
    impact: list[str]  # what stops working until this step is done (catalog impact)
    who: list[str]  # least-privileged role first
    action: Action
    commands: list[str]
    portal: str | None = None
    wait_minutes: int | None = None
    wait_source: str | None = None
    wait_note: str = NOT_DOCUMENTED
    after: list[str] = []
    checks: list[str] = []  # report check ids this step fixes: all passing on a re-check means done
    purposes: list[tuple[str, str]] = []  # (item, the vendor's purpose) for the script's comments
    script: list[str] = []  # idempotent PowerShell lines (each change checks the current state first)


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant_id: str
    tenant_label: str
    version: str
    verdict: Verdict
    checked_at: str | None
    cached: bool
    steps: list[Step]
    unread: list[str]  # checks that could not be read: the plan does not cover them
    app_object_id: str | None
    app_id: str

    @property
    def nothing_to_fix(self) -> str:
        return f"Nothing to fix: {self.tenant_label} grants everything {self.version} asks for"

    @property
    def longest_wait(self) -> int | None:
        waits = [step.wait_minutes for step in self.steps if step.wait_minutes]
        return max(waits) if waits else None

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant_id, "version": self.version, "verdict": self.verdict.value,
            "checked_at": self.checked_at, "cached": self.cached, "unread": self.unread,
            "steps": [step.model_dump(mode="json", exclude={"checks", "purposes", "script"}) for step in self.steps],
        }


class PlanRefused(Exception):
    """The report is a failed read (nothing about the app could be read): no plan is built from it."""


def failed_read(report: Report) -> str | None:
    """Why nothing could be read, when the app's service principal itself could not be read (the reason alone:
    callers say "could not check TENANT" themselves)."""
    first = next((item for item in report.items if item.id == "service_principal"), None)
    if first is None or first.status is CheckStatus.unknown:
        reason = report.common_failure or (first.detail if first else "nothing could be read")
        return reason.removeprefix(COULD_NOT_CHECK)
    return None


def _q(text: str) -> str:
    """A PowerShell single-quoted string. PowerShell also ends one at typographic single quotes, so those are
    doubled too (about_Quoting_Rules)."""
    for quote in ("'", "\u2018", "\u2019", "\u201a", "\u201b"):
        text = text.replace(quote, quote * 2)
    return f"'{text}'"


_JUSTIFICATION = "Huntress Managed ITDR needs this role permanently"


def _comment(text: str) -> str:
    """A line comment: a line break would end it, so none survives."""
    return "# " + " ".join(text.split())


def _graph_body(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(", ", ": "))


class Planner:
    """Builds plans with the configured endpoints, so national clouds get their own URLs."""

    def __init__(self, catalog: Catalog, graph_url: str, admin_consent_url: Callable[[str], str],
                 target_app_id: str) -> None:
        self.catalog = catalog
        self.target_app_id = target_app_id
        self.graph_url = graph_url.rstrip("/")
        self.admin_consent_url = admin_consent_url  # tenant id -> the admin-consent link

    def plan(self, report: Report) -> Plan:
        reason = failed_read(report)
        if reason is not None:
            raise PlanRefused(reason)
        tenant = report.tenant
        label = tenant.domain or tenant.id
        steps = [step for step in self._steps(report) if step is not None]
        by_id = {step.id for step in steps}
        steps = [step.model_copy(update={"after": [a for a in step.after if a in by_id]}) for step in steps]
        unread = [f"{item.title}: {item.detail}" for item in report.items if item.status is CheckStatus.unknown]
        return Plan(tenant_id=tenant.id, tenant_label=label, version=report.catalog_version, verdict=report.verdict,
                    checked_at=report.checked_at, cached=report.cached, steps=_ordered(steps), unread=unread,
                    app_object_id=report.app_object_id, app_id=self.target_app_id)

    def _steps(self, report: Report) -> list[Step | None]:
        open_items = [item for item in report.items if item.status in (CheckStatus.failed, CheckStatus.warn)]
        by_id = {item.id: item for item in open_items}
        sp_id = report.app_object_id
        return [
            self._conditional_access(report, by_id.get("policy.conditional_access"), sp_id),
            self._security_defaults(by_id.get("policy.security_defaults")),
            self._consent(report, by_id.get("service_principal"), open_items),
            self._hydration(by_id.get("exchange.hydration")),
            *self._roles(report, open_items, sp_id),
            self._time_bound(report, sp_id),
            self._audit_log(by_id.get("exchange.audit_log")),
            self._role_group(open_items),
            self._licence(by_id.get("licence.p2")),
        ]

    def _item(self, check: CheckItem) -> Item | None:
        return self.catalog.get(check.catalog_name) if check.catalog_name else None

    def _impact(self, checks: list[CheckItem]) -> list[str]:
        seen: dict[str, None] = {}
        for check in checks:
            item = self._item(check)
            text = f"{item.impact.capability_title}: {item.impact.capability_summary}" if item else check.why
            if text:
                seen.setdefault(text, None)
        return list(seen)

    def _purposes(self, checks: list[CheckItem]) -> list[tuple[str, str]]:
        out = []
        for check in checks:
            item = self._item(check)
            if item is not None:
                out.append((item.name, item.purpose or item.impact.capability_summary))
        return out

    # --- consent --------------------------------------------------------------------------------

    def _consent(self, report: Report, sp_check: CheckItem | None, open_items: list[CheckItem]) -> Step | None:
        permissions = [check for check in open_items if check.group in (
            CheckGroup.graph, CheckGroup.exchange, CheckGroup.o365_management, CheckGroup.partner_center)]
        if sp_check is None and not permissions:
            return None
        tenant = report.tenant.id
        link = self.admin_consent_url(tenant)
        if sp_check is not None and report.app_object_id is not None:
            # Present but disabled: consent will not help, the service principal is switched back on.
            return Step(
                id="enable-app", title="Enable the ITDR app's service principal", items=[sp_check.title],
                impact=[sp_check.why or ""], who=["Cloud Application Administrator", "Application Administrator"],
                action=Action.consent,
                commands=[f"Update-MgServicePrincipal -ServicePrincipalId {report.app_object_id} -AccountEnabled",
                          f"PATCH {self.graph_url}/v1.0/servicePrincipals/{report.app_object_id} "
                          + _graph_body({"accountEnabled": True})],
                portal="Entra admin center → Enterprise applications → the ITDR app → Properties → "
                       "Enabled for users to sign in: Yes",
                checks=["service_principal"],
                script=[
                    f"$sp = Get-MgServicePrincipal -ServicePrincipalId {_q(report.app_object_id)}",
                    "if (-not $sp.AccountEnabled) {",
                    "    if ($PSCmdlet.ShouldProcess($sp.DisplayName, 'Enable the service principal')) {",
                    f"        Update-MgServicePrincipal -ServicePrincipalId {_q(report.app_object_id)} "
                    "-AccountEnabled",
                    "    }",
                    "}",
                ],
            )
        names = [check.catalog_name or check.title for check in permissions]
        future = [check.catalog_name for check in permissions if check.status is CheckStatus.warn and
                  check.catalog_name]
        title = "Grant admin consent to the ITDR app" + (" (creates its service principal)" if sp_check else "")
        impact = self._impact(permissions or ([sp_check] if sp_check else []))
        return Step(
            id="consent", title=title, items=names, impact=impact,
            who=["Privileged Role Administrator", "Global Administrator"], action=Action.consent,
            commands=[f"/itdr consent {tenant} {report.catalog_version}  (Slack: the four-eyes consent workflow)",
                      f"Admin-consent link for the approver: {link}"],
            portal="Entra admin center → Enterprise applications → the ITDR app → Permissions → "
                   "Grant admin consent",
            wait_note="not documented: Microsoft warns that app role assignments 'might have replication delays' "
                      "without a figure",
            wait_source=SOURCES["replication"],
            after=["conditional-access"],
            checks=(["service_principal"] if sp_check else []) + [check.id for check in permissions],
            purposes=self._purposes(permissions),
            script=[
                _comment(f"{len(names)} application permissions are missing ({len(future)} of them for future "
                         "use). They are granted by admin consent through the approval workflow, never by a "
                         "script."),
                "Write-Warning " + _q(f"Grant admin consent through the approval workflow (/itdr consent {tenant} "
                                      f"{report.catalog_version}) or this link: {link}"),
            ],
        )

    # --- directory roles ------------------------------------------------------------------------

    def _roles(self, report: Report, open_items: list[CheckItem], sp_id: str | None) -> list[Step | None]:
        roles = [check for check in open_items if check.group is CheckGroup.entra_role]
        missing = [c for c in roles if (c.catalog_name or "") not in report.role_findings]
        eligible = [c for c in roles if report.role_findings.get(c.catalog_name or "") == ELIGIBLE_ONLY]
        scoped = [c for c in roles if c.catalog_name in report.role_findings and c not in eligible]
        return [
            self._role_step("directory-roles", "Assign the missing Entra roles to the ITDR app, directory-wide",
                            missing, sp_id),
            self._role_step("roles-eligible-only",
                            "Eligible only (PIM): give the ITDR app an active, permanent assignment of these roles",
                            eligible, sp_id),
            self._role_step("roles-scoped", "Widen the roles scoped to an administrative unit to the directory",
                            scoped, sp_id,
                            note="; ".join(f"{c.catalog_name} is assigned at {report.role_findings[c.catalog_name]}"
                                           for c in scoped if c.catalog_name)),
        ]

    def _role_templates(self, checks: list[CheckItem]) -> list[tuple[Item, str]]:
        """The catalog's directory roles behind `checks`, each with its template id."""
        found = [(item, item.ids.template_id) for item in map(self._item, checks) if item is not None]
        return [(item, template) for item, template in found if template is not None]

    def _role_step(self, step_id: str, title: str, checks: list[CheckItem], sp_id: str | None,
                   note: str | None = None) -> Step | None:
        if not checks:
            return None
        principal = sp_id or "<the ITDR app's service principal id, after consent>"
        commands: list[str] = []
        script = [
            "$assigned = @(Get-MgRoleManagementDirectoryRoleAssignment -Filter "
            "\"principalId eq '$ServicePrincipalId'\" -All)",
        ]
        for item, template in self._role_templates(checks):
            commands.append(f"New-MgRoleManagementDirectoryRoleAssignment -PrincipalId {principal} "
                            f"-RoleDefinitionId {template} -DirectoryScopeId '/'")
            commands.append(f"POST {self.graph_url}/v1.0/roleManagement/directory/roleAssignments " + _graph_body(
                {"@odata.type": "#microsoft.graph.unifiedRoleAssignment", "principalId": principal,
                 "roleDefinitionId": template, "directoryScopeId": "/"}))
            script += [
                _comment(f"{item.name}: {item.purpose or item.impact.capability_summary}"),
                f"if (-not ($assigned | Where-Object {{ $_.RoleDefinitionId -eq {_q(template)} -and "
                "$_.DirectoryScopeId -eq '/' })) {",
                f"    if ($PSCmdlet.ShouldProcess({_q(item.name)}, 'Assign directory-wide to the ITDR app')) {{",
                "        New-MgRoleManagementDirectoryRoleAssignment -PrincipalId $ServicePrincipalId "
                f"-RoleDefinitionId {_q(template)} -DirectoryScopeId '/' | Out-Null",
                "    }",
                "}",
            ]
        return Step(
            id=step_id, title=title + (f" ({note})" if note else ""),
            items=[c.catalog_name or c.title for c in checks], impact=self._impact(checks),
            who=["Privileged Role Administrator"], action=Action.directory_role, commands=commands,
            portal="Entra admin center → Roles & admins → the role → Add assignments → the ITDR app "
                   "(Assignment type: Active, Permanently assigned)",
            wait_source=None, after=["consent"], checks=[c.id for c in checks], purposes=self._purposes(checks),
            script=script,
        )

    def _time_bound(self, report: Report, sp_id: str | None) -> Step | None:
        """Roles held through a time-bound assignment: made permanent in place (PIM's adminUpdate with no
        expiration, https://learn.microsoft.com/graph/api/rbacapplication-post-roleassignmentschedulerequests)."""
        checks = [c for c in report.items if c.catalog_name in report.role_ends]
        if not checks:
            return None
        principal = sp_id or "<the ITDR app's service principal id>"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        commands: list[str] = []
        script = [
            "$instances = @(Get-MgRoleManagementDirectoryRoleAssignmentScheduleInstance -Filter "
            "\"principalId eq '$ServicePrincipalId'\" -All)",
        ]
        for item, template in self._role_templates(checks):
            ends = when_text(report.role_ends[item.name])
            commands.append(
                "New-MgRoleManagementDirectoryRoleAssignmentScheduleRequest -BodyParameter @{action='adminUpdate'; "
                f"principalId='{principal}'; roleDefinitionId='{template}'; directoryScopeId='/'; "
                f"justification={_q(_JUSTIFICATION)}; "
                "scheduleInfo=@{startDateTime=(Get-Date).ToUniversalTime().ToString('o'); "
                "expiration=@{type='noExpiration'}}}")
            commands.append(f"POST {self.graph_url}/v1.0/roleManagement/directory/roleAssignmentScheduleRequests "
                            + _graph_body({"action": "adminUpdate", "principalId": principal,
                                           "roleDefinitionId": template, "directoryScopeId": "/",
                                           "justification": _JUSTIFICATION,
                                           "scheduleInfo": {"startDateTime": now,
                                                            "expiration": {"type": "noExpiration"}}}))
            script += [
                _comment(f"{item.name}: held only until {ends} through a time-bound assignment"),
                f"if (-not ($instances | Where-Object {{ $_.RoleDefinitionId -eq {_q(template)} -and "
                "$_.DirectoryScopeId -eq '/' -and -not $_.EndDateTime })) {",
                f"    if ($PSCmdlet.ShouldProcess({_q(item.name)}, 'Make the assignment permanent')) {{",
                "        $request = @{",
                "            action = 'adminUpdate'",
                "            principalId = $ServicePrincipalId",
                f"            roleDefinitionId = {_q(template)}",
                "            directoryScopeId = '/'",
                f"            justification = {_q(_JUSTIFICATION)}",
                "            scheduleInfo = @{",
                "                startDateTime = (Get-Date).ToUniversalTime().ToString('o')",
                "                expiration = @{ type = 'noExpiration' }",
                "            }",
                "        }",
                "        New-MgRoleManagementDirectoryRoleAssignmentScheduleRequest -BodyParameter $request | Out-Null",
                "    }",
                "}",
            ]
        first_end = when_text(min(report.role_ends[c.catalog_name or ""] for c in checks))
        return Step(
            id="roles-time-bound",
            title="Make the ITDR app's time-bound role assignments permanent before they end",
            items=[c.catalog_name or c.title for c in checks], impact=self._impact(checks),
            who=["Privileged Role Administrator"], action=Action.directory_role, commands=commands,
            portal="Entra admin center → Identity Governance → Privileged Identity Management → Microsoft Entra "
                   "roles → Assignments → Active assignments → the ITDR app's row → Update → Permanently assigned",
            wait_note=f"none; do it before {first_end}, when the first of these assignments ends",
            checks=[c.id for c in checks], purposes=self._purposes(checks), script=script,
        )

    # --- Exchange -------------------------------------------------------------------------------

    def _hydration(self, check: CheckItem | None) -> Step | None:
        if check is None:
            return None
        return Step(
            id="exchange-hydration", title="Enable Exchange organization customization (hydrate the organization)",
            items=[check.title], impact=[check.why or ""], who=["Exchange Administrator"], action=Action.exchange,
            commands=["Enable-OrganizationCustomization"],
            portal=None, checks=[check.id],
            script=[
                _comment("A dehydrated organization refuses role-group and audit changes: hydrate it first."),
                "if ((Get-OrganizationConfig).IsDehydrated) {",
                "    if ($PSCmdlet.ShouldProcess($TenantId, 'Enable-OrganizationCustomization')) {",
                "        Enable-OrganizationCustomization",
                "    }",
                "}",
            ],
        )

    def _audit_log(self, check: CheckItem | None) -> Step | None:
        if check is None:
            return None
        return Step(
            id="exchange-audit-log", title="Turn on unified audit log ingestion", items=[check.title],
            impact=[check.why or ""], who=["Exchange Administrator"], action=Action.exchange,
            commands=["Set-AdminAuditLogConfig -UnifiedAuditLogIngestionEnabled $true"],
            portal="Microsoft Purview portal → Audit → Start recording user and admin activity",
            wait_minutes=60, wait_source=SOURCES["audit_log"],
            wait_note="Changes to the audit log configuration may take up to 60 minutes to be applied",
            after=["exchange-hydration"], checks=[check.id],
            script=[
                "if (-not (Get-AdminAuditLogConfig).UnifiedAuditLogIngestionEnabled) {",
                "    if ($PSCmdlet.ShouldProcess($TenantId, 'Turn on unified audit log ingestion')) {",
                "        Set-AdminAuditLogConfig -UnifiedAuditLogIngestionEnabled $true",
                "    }",
                "}",
            ],
        )

    def _role_group(self, open_items: list[CheckItem]) -> Step | None:
        checks = [c for c in open_items if c.group is CheckGroup.exchange_role_group and c.catalog_name]
        if not checks:
            return None
        script = ["$groupRoles = @(Get-ManagementRoleAssignment -RoleAssignee 'Organization Management' "
                  "-Delegating $false | ForEach-Object { \"$($_.Role)\" })"]
        commands = []
        for check in checks:
            name = check.catalog_name or ""
            commands.append(f'New-ManagementRoleAssignment -SecurityGroup "Organization Management" -Role "{name}"')
            item = self._item(check)
            script += [
                _comment(f"{name}: {item.purpose if item and item.purpose else check.why or ''}"),
                f"if ($groupRoles -notcontains {_q(name)}) {{",
                f"    if ($PSCmdlet.ShouldProcess('Organization Management', {_q('Assign the role ' + name)})) {{",
                f"        New-ManagementRoleAssignment -SecurityGroup 'Organization Management' -Role {_q(name)} "
                "| Out-Null",
                "    }",
                "}",
            ]
        return Step(
            id="exchange-role-group", title="Add the missing roles to Exchange's Organization Management role group",
            items=[c.catalog_name or "" for c in checks], impact=self._impact(checks),
            who=["Exchange Administrator"], action=Action.exchange, commands=commands,
            portal="Exchange admin center → Roles → Admin roles → Organization Management → Permissions",
            after=["exchange-hydration"], checks=[c.id for c in checks], purposes=self._purposes(checks),
            script=script,
        )

    # --- policies and licence -------------------------------------------------------------------

    def _conditional_access(self, report: Report, check: CheckItem | None, sp_id: str | None) -> Step | None:
        if check is None:
            return None
        commands, script = [], [_comment("Conditional Access is changed by a person who knows the policy's intent: "
                                         "this script only names what to exclude.")]
        for policy in report.blocking_policies:
            if policy.targets_service_principals and sp_id:
                commands.append(
                    f"PATCH {self.graph_url}/v1.0/identity/conditionalAccess/policies/{policy.id} "
                    + _graph_body({"conditions": {"clientApplications": {"excludeServicePrincipals": [sp_id]}}})
                    + "  (merge with the policy's existing exclusions)")
                what = f"exclude the ITDR app ({sp_id})"
            else:
                what = "exclude the admin who onboards (a user or group of the policy's choice)"
            commands.append(f"Get-MgIdentityConditionalAccessPolicy -ConditionalAccessPolicyId {policy.id}  "
                            f"# '{policy.name}': {what}")
            script.append(f"Write-Warning {_q(f'Conditional Access policy {policy.name} ({policy.id}): {what}.')}")
        return Step(
            id="conditional-access", title="Exclude onboarding from the blocking Conditional Access policies",
            items=[p.name for p in report.blocking_policies] or [check.title], impact=[check.why or ""],
            who=["Conditional Access Administrator"], action=Action.conditional_access, commands=commands,
            portal="Entra admin center → Protection → Conditional Access → Policies → the policy → Exclude",
            checks=[check.id], script=script,
        )

    def _security_defaults(self, check: CheckItem | None) -> Step | None:
        if check is None:
            return None
        return Step(
            id="security-defaults",
            title="Security defaults are on: the onboarding admin must complete MFA (your choice: keep them, or "
                  "replace them with Conditional Access)",
            items=[check.title], impact=[check.detail], who=["Security Administrator"],
            action=Action.security_defaults,
            commands=["Get-MgPolicyIdentitySecurityDefaultEnforcementPolicy",
                      "Keep them: make sure the admin who consents has MFA registered. Or, only with equivalent "
                      "Conditional Access policies in place: Update-MgPolicyIdentitySecurityDefaultEnforcementPolicy "
                      "-IsEnabled:$false"],
            portal="Entra admin center → Overview → Properties → Manage security defaults",
            checks=[], script=[f"Write-Warning {_q(check.detail)}"],
        )

    def _licence(self, check: CheckItem | None) -> Step | None:
        if check is None:
            return None
        return Step(
            id="licence-p2", title="Microsoft Entra ID P2 is not licensed (informational)", items=[check.title],
            impact=[check.why or ""], who=["Billing Administrator"], action=Action.licence, commands=[],
            portal="Microsoft 365 admin center → Billing → Purchase services → Microsoft Entra ID P2 "
                   "(or a suite that includes it)",
            checks=[check.id], script=[f"Write-Warning {_q('No Entra ID P2: ' + (check.why or ''))}"],
        )


def _ordered(steps: list[Step]) -> list[Step]:
    """Steps in their listed order, each moved after those it needs (a stable topological sort)."""
    done: list[Step] = []
    pending = list(steps)
    while pending:
        ready = next(step for step in pending
                     if all(any(d.id == need for d in done) for need in step.after))
        done.append(ready)
        pending.remove(ready)
    return done


def step_done(step: Step, report: Report) -> bool | None:
    """Whether a fresh report shows the step done (every check it fixes passing, no role of it held only until a
    date); None for informational steps."""
    if not step.checks:
        return None
    by_id = {item.id: item.status for item in report.items}
    return (all(by_id.get(check) in (CheckStatus.passed, CheckStatus.not_applicable) for check in step.checks)
            and not any(name in report.role_ends for name in step.items))


def script(plan: Plan, *, generated_at: str) -> str:
    """One idempotent PowerShell script for the whole plan: -WhatIf shows every change without making it."""
    graph_roles = any(step.action is Action.directory_role for step in plan.steps)
    graph_any = graph_roles or any(step.id == "enable-app" for step in plan.steps)
    exchange = any(step.action is Action.exchange for step in plan.steps)
    scopes = ["RoleManagement.ReadWrite.Directory"] if graph_roles else []
    if any(step.id == "enable-app" for step in plan.steps):
        scopes.append("Application.ReadWrite.All")
    lines = [
        _comment(f"itdr fix plan for {plan.tenant_label} ({plan.tenant_id}), catalog {plan.version}, "
                 f"generated {generated_at} from the check of {plan.checked_at or 'unknown time'}."),
        _comment("Idempotent: every change checks the current state first. Run with -WhatIf to see the changes."),
        _comment("Needs PowerShell 7, the Microsoft Graph PowerShell SDK (Microsoft.Graph.Authentication, "
                 "Microsoft.Graph.Identity.Governance, Microsoft.Graph.Applications) and ExchangeOnlineManagement."),
        _comment("Sign in as the roles each step names. No secret is stored in this script."),
        "[CmdletBinding(SupportsShouldProcess)]",
        "param()",
        "$ErrorActionPreference = 'Stop'",
        f"$TenantId = {_q(plan.tenant_id)}",
        f"$ServicePrincipalId = {_q(plan.app_object_id or '')}",
    ]
    if graph_any:
        lines += [f"Connect-MgGraph -TenantId $TenantId -Scopes {', '.join(_q(s) for s in scopes)} -NoWelcome"]
    if exchange:
        lines += ["Connect-ExchangeOnline -ShowBanner:$false"]
    if graph_roles and not plan.app_object_id:
        lines += [
            _comment("The ITDR app is not in the tenant yet: after admin consent, its service principal is read."),
            "$ServicePrincipalId = (Get-MgServicePrincipal -Filter \"appId eq '$AppId'\").Id",
        ]
        lines.insert(lines.index("$ErrorActionPreference = 'Stop'") + 1, f"$AppId = {_q(plan.app_id)}")
    for number, step in enumerate(plan.steps, 1):
        lines += ["", _comment(f"Step {number} ({step.id}): {step.title}"),
                  _comment(f"Who: {', '.join(step.who)}. Wait afterwards: "
                           + (f"{counted(step.wait_minutes, 'minute')} ({step.wait_source})" if step.wait_minutes
                              else step.wait_note))]
        for item, purpose in step.purposes if step.action is Action.consent else []:
            lines.append(_comment(f"{item}: {purpose}"))
        lines += step.script
    return "\n".join(lines) + "\n"
