"""Reading a tenant's real grants from Microsoft in as few sequential waves as the APIs allow.

Warm (tokens cached): one wave, a single Graph $batch and the Exchange cmdlets in parallel. Cold: msal's OIDC
discovery and the tokens first, then that same wave: three waves. A second batch runs only in CPV mode before the
app's object id is known (delegated grants filter on it) or when a tenant refuses alternate-key navigation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from bot.microsoft.errors import ApiError, MicrosoftError
from bot.microsoft.exchange import ExchangeClient
from bot.microsoft.graph import GraphClient, SubRequest, SubResponse, odata_string
from bot.microsoft.http import Priority, parse_retry_after
from bot.readiness.limits import CheckLimits
from bot.readiness.model import (
    ConditionalAccessPolicy,
    Reading,
    RoleAssignment,
    ServicePrincipal,
    TenantInfo,
    TenantSnapshot,
)
from bot.store import Cache
from catalog import Api, Catalog, Kind

log = logging.getLogger(__name__)

# Entra ID P2's service plan (AAD_PREMIUM_P2), as listed in Microsoft's licensing service plan reference.
P2_SERVICE_PLAN_ID = "eec0eb4f-6444-4f95-aba0-50c24d67f998"
ORG_MANAGEMENT = "Organization Management"


class WaveCounter:
    """Counts sequential waves: calls started together (in one gather) are one wave."""

    def __init__(self) -> None:
        self.waves = 0

    async def run(self, *calls: Awaitable[Any]) -> list[Any]:
        self.waves += 1
        return list(await asyncio.gather(*calls, return_exceptions=True))


_COME_BACK_LATER = (429, 503)

# A cmdlet's output objects, or why it could not be run.
CmdletOutput = list[dict[str, Any]] | BaseException


class ExchangeOutputs(NamedTuple):
    """The three Exchange cmdlets of a check, run together."""

    audit: CmdletOutput
    org: CmdletOutput
    roles: CmdletOutput


_API_NAMES = {"graph": "Graph", "exchange": "Exchange"}
#: The role-management reads (sub-request ids), filtered on the app's object id.
_ROLE_MANAGEMENT = ("assignments", "eligible", "ends")


def _instant(value: object) -> datetime | None:
    """An OData DateTimeOffset ("2026-12-20T14:00:00Z", up to 7 fractional digits) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # Python 3.11 reads "Z" and any number of fractional digits
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _describe(error: BaseException) -> str:
    """Why a read failed, as a person reads it: "Exchange answered 500 InternalServerError: …"."""
    if not isinstance(error, MicrosoftError):
        return type(error).__name__
    service = getattr(error, "service", None)
    if not isinstance(service, str):
        return error.message
    api = _API_NAMES.get(service, service)
    detail = error.message.removeprefix(f"{service}: ")  # the client's own prefix, said once as the API's name
    if isinstance(error, ApiError) and error.status:
        return f"{api} answered {error.status}{f' {error.code}' if error.code else ''}: {detail}"
    return f"{api}: {detail}"


def _failed(error: BaseException) -> Reading[Any]:
    """Why an exception stopped a read; a throttled or unavailable service carries its Retry-After along."""
    retry_after = (error.retry_after if isinstance(error, ApiError) and error.status in _COME_BACK_LATER
                   else None)
    return Reading.failed(_describe(error), retry_after=retry_after)


def _sub_failed(response: SubResponse, what: str) -> Reading[Any]:
    retry_after = parse_retry_after(response.headers.get("retry-after")) if response.status in _COME_BACK_LATER \
        else None
    return Reading.failed(f"Graph answered {response.status} to {what} ({response.error_code or 'error'}: "
                          f"{response.error_message})", retry_after=retry_after)


class Collector:
    """Builds a TenantSnapshot for one tenant. One instance serves many tenants and checks."""

    def __init__(
        self,
        catalog: Catalog,
        graph_for: Callable[[str, Priority], GraphClient],
        exchange: ExchangeClient,
        target_app_id: str,
        *,
        cache: Cache | None = None,
        limits: CheckLimits | None = None,
        cpv_mode: bool = False,
        cache_scope: str = "",
    ) -> None:
        self.catalog = catalog
        self.graph_for = graph_for
        self.exchange = exchange
        self.target_app_id = target_app_id
        self.cache = cache
        self.limits = limits
        self.cpv_mode = cpv_mode
        self.cache_scope = cache_scope  # e.g. the Graph host, so clouds never share cached ids
        # Directory roles some revision asks for: role-management reads only matter when one is missing.
        self.role_templates = frozenset(item.ids.template_id for item in catalog.items
                                        if item.kind is Kind.directory_role and item.ids.template_id)
        self.resources = [
            catalog.resources[api]["app_id"]
            for api in (Api.graph, Api.exchange, Api.o365_management, Api.partner_center)
            if api is not Api.partner_center or cpv_mode
        ]

    async def _remember(self, key: str, value: Any, ttl: int) -> None:
        if self.cache is not None:
            await self.cache.set_json(key, value, ttl)

    # --- collection ------------------------------------------------------------------------------

    async def collect(self, tenant_id: str, waves: WaveCounter, priority: Priority) -> TenantSnapshot:
        graph = self.graph_for(tenant_id, priority)
        target = f"/servicePrincipals(appId={odata_string(self.target_app_id)})"
        batch_a: list[SubRequest] = [
            SubRequest("sp", f"{target}?$select=id,appId,displayName,accountEnabled"),
            # Alternate-key navigation reads the app's grants and roles without knowing its object id first,
            # so a cold check needs no second batch.
            *self._grants_and_roles(target),
            SubRequest("org", "/organization?$select=id,displayName,verifiedDomains,assignedPlans"),
            SubRequest("ca", "/identity/conditionalAccess/policies?$select=id,displayName,state,conditions,"
                             "grantControls"),
            SubRequest("secdefaults", "/policies/identitySecurityDefaultsEnforcementPolicy?$select=isEnabled"),
        ]
        # Resource service principals: their object ids differ per tenant, their app roles do not (per cloud),
        # so the large appRoles arrays are fetched once and cached for every tenant.
        resources_key = f"resources:{self.cache_scope}:{tenant_id}"
        sp_key = f"sp:{self.cache_scope}:{tenant_id}:{self.target_app_id}"
        keys = [resources_key, sp_key, *(f"approles:{self.cache_scope}:{app_id}" for app_id in self.resources)]
        cached = await self.cache.get_many_json(keys) if self.cache else [None] * len(keys)  # one round trip
        known_resources: dict[str, str] = cached[0] or {}
        # Delegated grants (CPV only) and role management (PIM eligibility, scoped assignments) can only be
        # filtered by the app's object id: cached after the first check, so a warm check reads them in this batch.
        known_sp_id = cached[1]
        role_maps: dict[str, dict[str, str]] = {}
        for index, app_id in enumerate(self.resources):
            role_maps[app_id] = cached[2 + index] or {}
            if app_id in known_resources.values() and role_maps[app_id]:
                continue
            select = "id,appId" if role_maps[app_id] else "id,appId,appRoles"
            batch_a.append(SubRequest(f"res{index}", f"/servicePrincipals(appId={odata_string(app_id)})"
                                                       f"?$select={select}"))
        if known_sp_id:
            batch_a += self._role_management(known_sp_id)
            if self.cpv_mode:
                batch_a.append(self._delegated(known_sp_id))

        if self.limits is not None:  # the batch reads Conditional Access: one read a second per tenant
            await self.limits.conditional_access(tenant_id)
        graph_result, exchange_result = await waves.run(graph.batch(batch_a), self._exchange(tenant_id))
        if isinstance(graph_result, BaseException):
            failed = _failed(graph_result)
            snapshot = TenantSnapshot.unreadable(TenantInfo(id=tenant_id), failed.error or "",
                                                 retry_after=failed.retry_after)
            self._apply_exchange(snapshot, exchange_result)
            return snapshot
        responses: dict[str, SubResponse] = graph_result
        snapshot = TenantSnapshot(tenant=self._tenant_info(tenant_id, responses["org"]),
                                  service_principal=self._service_principal(responses["sp"]))
        self._apply_exchange(snapshot, exchange_result)
        self._apply_org(snapshot, responses["org"])
        self._apply_policies(snapshot, responses["ca"], responses["secdefaults"])
        resource_ids = await self._resource_map(responses, known_resources, role_maps, resources_key)

        sp = snapshot.service_principal.value
        if sp is None:
            return snapshot  # absent or unreadable: nothing is granted to check
        by_sp: dict[str, SubResponse] = {
            key: responses[key] for key in ("grants", "roles", "delegated", *_ROLE_MANAGEMENT) if key in responses
        }
        retry: list[SubRequest] = []
        if any(not by_sp[key].ok for key in ("grants", "roles")):
            # Should a tenant refuse the alternate-key form, ask again by object id.
            retry += self._grants_and_roles(f"/servicePrincipals/{sp.id}")
        if known_sp_id != sp.id:
            # First check of this tenant, or the app was re-created: what was read by the old id is not its own.
            for key in _ROLE_MANAGEMENT:
                by_sp.pop(key, None)
            await self._remember(sp_key, sp.id, 7 * 24 * 3600)
            if self.cpv_mode:
                retry.append(self._delegated(sp.id))
            if self._roles_missing(by_sp["roles"]):
                # Only a role missing from memberOf needs explaining (eligible only? scoped?). The roles' ends come
                # with it, or with the delegated grants: a ready tenant's first check keeps its three waves
                # (bench/readiness.py: a fourth made it 520 ms, not 368), and every later one reads them in its batch.
                retry += self._role_management(sp.id)
            elif retry:
                retry += [sub for sub in self._role_management(sp.id) if sub.id == "ends"]
        if retry:
            second = (await waves.run(graph.batch(retry)))[0]
            if isinstance(second, BaseException):
                second = {sub.id: SubResponse(id=sub.id, status=599, body={"error": {
                    "code": type(second).__name__, "message": _describe(second)}}) for sub in retry}
            by_sp.update(second)
        await self._follow_pages(graph, by_sp, waves)
        self._apply_grants(snapshot, by_sp, resource_ids)
        return snapshot

    @staticmethod
    def _grants_and_roles(principal: str) -> list[SubRequest]:
        return [
            SubRequest("grants", f"{principal}/appRoleAssignments?$select=appRoleId,resourceId"),
            SubRequest("roles", f"{principal}/memberOf/microsoft.graph.directoryRole?$select=roleTemplateId"),
        ]

    @staticmethod
    def _role_management(sp_id: str) -> list[SubRequest]:
        """The app's active role assignments, PIM eligibilities and active assignments' schedules (their ends) at
        any scope, each filtered on its object id.
        https://learn.microsoft.com/graph/api/rbacapplication-list-roleassignments,
        https://learn.microsoft.com/graph/api/rbacapplication-list-roleeligibilityschedules and
        https://learn.microsoft.com/graph/api/rbacapplication-list-roleassignmentscheduleinstances (the active
        assignments, direct or through PIM, with `endDateTime`: null when permanent)"""
        principal = f"?$filter=principalId eq {odata_string(sp_id)}&$select=roleDefinitionId,directoryScopeId"
        return [
            SubRequest("assignments", f"/roleManagement/directory/roleAssignments{principal}"),
            SubRequest("eligible", f"/roleManagement/directory/roleEligibilitySchedules{principal}"),
            SubRequest("ends", f"/roleManagement/directory/roleAssignmentScheduleInstances{principal},endDateTime"),
        ]

    def _roles_missing(self, roles: SubResponse) -> bool:
        if not roles.ok or not isinstance(roles.body, dict):
            return False
        held = {role.get("roleTemplateId") for role in roles.body.get("value") or []}
        return bool(self.role_templates - held)

    @staticmethod
    def _delegated(sp_id: str) -> SubRequest:
        return SubRequest("delegated", f"/oauth2PermissionGrants?$filter=clientId eq {odata_string(sp_id)}")

    async def _follow_pages(self, graph: GraphClient, responses: dict[str, SubResponse], waves: WaveCounter) -> None:
        """Collections larger than one page carry @odata.nextLink; fetch the rest (rare: a few hundred grants)."""
        pending = {key: r for key, r in responses.items() if r.ok and isinstance(r.body, dict)
                   and r.body.get("@odata.nextLink")}
        if not pending:
            return
        results = await waves.run(*(graph.get_rest(r.body["@odata.nextLink"]) for r in pending.values()))
        for (key, response), rest in zip(pending.items(), results, strict=True):
            if isinstance(rest, BaseException):
                responses[key] = SubResponse(id=key, status=599, body={"error": {"code": "paging",
                                             "message": _describe(rest)}})
            else:
                response.body["value"] = [*response.body.get("value", []), *rest]

    # --- interpreting responses ------------------------------------------------------------------

    @staticmethod
    def _service_principal(response: SubResponse) -> Reading[ServicePrincipal | None]:
        if response.status == 404:
            return Reading(value=None)
        if not response.ok:
            return _sub_failed(response, "the ITDR app's service principal")
        body = response.body
        return Reading(value=ServicePrincipal(id=body["id"], app_id=body["appId"],
                                              display_name=body.get("displayName"),
                                              enabled=bool(body.get("accountEnabled", True))))

    @staticmethod
    def _tenant_info(tenant_id: str, response: SubResponse) -> TenantInfo:
        if not response.ok:
            return TenantInfo(id=tenant_id)
        orgs = response.body.get("value") or []
        if not orgs:
            return TenantInfo(id=tenant_id)
        org = orgs[0]
        domains = org.get("verifiedDomains") or []
        default = next((d["name"] for d in domains if d.get("isDefault")), None)
        initial = next((d["name"] for d in domains if d.get("isInitial")), None)
        return TenantInfo(id=org.get("id", tenant_id), domain=default or initial, name=org.get("displayName"))

    @staticmethod
    def _apply_org(snapshot: TenantSnapshot, response: SubResponse) -> None:
        if not response.ok:
            snapshot.p2_licensed = _sub_failed(response, "the organization's licences")
            return
        orgs = response.body.get("value") or []
        plans = orgs[0].get("assignedPlans", []) if orgs else []
        snapshot.p2_licensed = Reading(value=any(
            plan.get("servicePlanId") == P2_SERVICE_PLAN_ID and plan.get("capabilityStatus") == "Enabled"
            for plan in plans
        ))

    @staticmethod
    def _apply_policies(snapshot: TenantSnapshot, ca: SubResponse, defaults: SubResponse) -> None:
        if ca.ok:
            policies = []
            for raw in ca.body.get("value") or []:
                conditions = raw.get("conditions") or {}
                users = conditions.get("users") or {}
                apps = conditions.get("applications") or {}
                clients = conditions.get("clientApplications") or {}
                controls = (raw.get("grantControls") or {}).get("builtInControls") or []
                policies.append(ConditionalAccessPolicy(
                    id=raw.get("id", ""), name=raw.get("displayName", "(unnamed)"), state=raw.get("state", ""),
                    blocks="block" in controls,
                    targets_all_users="All" in (users.get("includeUsers") or []),
                    targets_all_apps="All" in (apps.get("includeApplications") or []),
                    targets_service_principals=bool(clients.get("includeServicePrincipals")),
                ))
            snapshot.conditional_access = Reading(value=policies)
        else:
            snapshot.conditional_access = _sub_failed(ca, "Conditional Access policies")
        if defaults.ok:
            snapshot.security_defaults = Reading(value=bool(defaults.body.get("isEnabled")))
        else:
            snapshot.security_defaults = _sub_failed(defaults, "Security Defaults")

    async def _resource_map(
        self,
        responses: dict[str, SubResponse],
        known: dict[str, str],
        role_maps: dict[str, dict[str, str]],
        resources_key: str,
    ) -> dict[str, tuple[str, dict[str, list[str]]]]:
        """Resource SP object id → (resource appId, app role id → its values) as this tenant publishes them."""
        object_ids = dict(known)  # object id → appId
        for index, app_id in enumerate(self.resources):
            response = responses.get(f"res{index}")
            if response is None or not response.ok:
                continue
            object_ids[response.body["id"]] = app_id
            if "appRoles" in response.body:
                role_maps[app_id] = {role["value"]: role["id"] for role in response.body["appRoles"] or []
                                     if role.get("value")}
                await self._remember(f"approles:{self.cache_scope}:{app_id}", role_maps[app_id], 24 * 3600)
        if object_ids != known:
            await self._remember(resources_key, object_ids, 7 * 24 * 3600)
        # Inverted once per resource (role id → values), so matching a grant is a lookup, not a scan of its roles.
        by_role_id: dict[str, dict[str, list[str]]] = {}
        for app_id in set(object_ids.values()):
            inverted: dict[str, list[str]] = {}
            for value, role_id in role_maps.get(app_id, {}).items():
                inverted.setdefault(role_id, []).append(value)
            by_role_id[app_id] = inverted
        return {object_id: (app_id, by_role_id[app_id]) for object_id, app_id in object_ids.items()}

    def _apply_grants(self, snapshot: TenantSnapshot, responses: dict[str, SubResponse],
                      resource_ids: dict[str, tuple[str, dict[str, list[str]]]]) -> None:
        grants = responses["grants"]
        if not grants.ok:
            snapshot.app_roles = _sub_failed(grants, "the app's granted permissions")
            snapshot.app_role_names = snapshot.app_roles
        else:
            pairs: set[tuple[str, str]] = set()
            names: set[tuple[str, str]] = set()
            for grant in grants.body.get("value") or []:
                resource = resource_ids.get(grant.get("resourceId", ""))
                if resource is None:
                    continue  # a resource we do not check (or could not identify)
                app_id, values_by_role_id = resource
                role_id = grant.get("appRoleId", "")
                pairs.add((app_id, role_id))
                # The tenant's resource names its own app roles: where a cloud uses other ids for a catalog
                # name (GCC High), the name still matches.
                names.update((app_id, value) for value in values_by_role_id.get(role_id, ()))
            snapshot.app_role_names = Reading(value=frozenset(names))
            snapshot.app_roles = Reading(value=frozenset(pairs))
        roles = responses["roles"]
        if not roles.ok:
            snapshot.directory_roles = _sub_failed(roles, "the app's directory roles")
        else:
            snapshot.directory_roles = Reading(value=frozenset(
                role.get("roleTemplateId", "") for role in roles.body.get("value") or []
            ))
        snapshot.role_assignments = self._role_assignments(responses)
        snapshot.role_ends = self._role_ends(responses.get("ends"))
        delegated = responses.get("delegated")
        if delegated is None:
            snapshot.delegated_scopes = Reading(value={})
        elif not delegated.ok:
            snapshot.delegated_scopes = _sub_failed(delegated, "the app's delegated grants")
        else:
            scopes: dict[str, frozenset[str]] = {}
            for grant in delegated.body.get("value") or []:
                resource = resource_ids.get(grant.get("resourceId", ""))
                if resource is None or grant.get("consentType") != "AllPrincipals":
                    continue
                app_id = resource[0]
                scopes[app_id] = scopes.get(app_id, frozenset()) | frozenset((grant.get("scope") or "").split())
            snapshot.delegated_scopes = Reading(value=scopes)

    @staticmethod
    def _role_assignments(responses: dict[str, SubResponse]) -> Reading[frozenset[RoleAssignment]]:
        found: set[RoleAssignment] = set()
        for key, eligible in (("assignments", False), ("eligible", True)):
            response = responses.get(key)
            if response is None:
                return Reading.failed("not read")
            if not response.ok:
                # Explanatory only (a tenant without PIM may refuse eligibility): no Retry-After carried, so a
                # sweep is not rescheduled for it.
                return Reading.failed(_sub_failed(response, "the app's role assignments").error or "")
            for entry in response.body.get("value") or []:
                # Built-in roles: roleDefinitionId is the role's template id (microsoft-identifiers-notes.md 14).
                found.add(RoleAssignment(str(entry.get("roleDefinitionId") or ""),
                                         str(entry.get("directoryScopeId") or "/"), eligible))
        return Reading(value=frozenset(found))

    @staticmethod
    def _role_ends(response: SubResponse | None) -> Reading[dict[str, datetime]]:
        """When each role held directory-wide only through time-bound assignments ends (the latest end of its
        instances at scope "/"); a role with any permanent instance never ends."""
        if response is None:
            return Reading.failed("not read")
        if not response.ok:
            # Explanatory only, like the eligibility read: the roles themselves were read from memberOf.
            return Reading.failed(_sub_failed(response, "the app's role assignment schedules").error or "")
        ends: dict[str, datetime | None] = {}
        for entry in response.body.get("value") or []:
            if str(entry.get("directoryScopeId") or "/") != "/":
                continue
            template = str(entry.get("roleDefinitionId") or "")
            end = _instant(entry.get("endDateTime"))
            if end is None and entry.get("endDateTime"):
                continue  # an end we cannot read is not "permanent"
            if template in ends and ends[template] is None:
                continue  # held permanently as well
            earlier = ends.get(template)
            if end is None or earlier is None:
                ends[template] = end
            else:
                ends[template] = max(end, earlier)
        return Reading(value={template: end for template, end in ends.items() if end is not None})

    # --- Exchange ---------------------------------------------------------------------------------

    async def _exchange(self, tenant_id: str) -> ExchangeOutputs:
        async with self.limits.exchange() if self.limits is not None else contextlib.nullcontext():
            return await self._cmdlets(tenant_id)

    async def _cmdlets(self, tenant_id: str) -> ExchangeOutputs:
        outputs = await asyncio.gather(
            self.exchange.invoke(tenant_id, "Get-AdminAuditLogConfig", select=["UnifiedAuditLogIngestionEnabled"]),
            self.exchange.invoke(tenant_id, "Get-OrganizationConfig", select=["IsDehydrated"]),
            self.exchange.invoke(tenant_id, "Get-ManagementRoleAssignment",
                                 {"RoleAssignee": ORG_MANAGEMENT, "Delegating": False}),
            return_exceptions=True,
        )
        return ExchangeOutputs(*outputs)

    @staticmethod
    def _apply_exchange(snapshot: TenantSnapshot, result: ExchangeOutputs | BaseException) -> None:
        if isinstance(result, BaseException):
            snapshot.audit_log_enabled = snapshot.dehydrated = snapshot.org_management_roles = _failed(result)
            return
        audit, org, roles = result
        snapshot.audit_log_enabled = _first_flag(audit, "UnifiedAuditLogIngestionEnabled", "audit log configuration")
        snapshot.dehydrated = _first_flag(org, "IsDehydrated", "organization configuration")
        if isinstance(roles, BaseException):
            snapshot.org_management_roles = _failed(roles)
        else:
            names = set()
            for assignment in roles:
                if assignment.get("RoleAssigneeName", ORG_MANAGEMENT) != ORG_MANAGEMENT:
                    continue
                role = str(assignment.get("Role") or "")
                # The role may come back as an identity path; compare on its last segment.
                names.add(role.replace("/", "\\").rsplit("\\", 1)[-1])
            snapshot.org_management_roles = Reading(value=frozenset(names))


def _first_flag(output: list[dict[str, Any]] | BaseException, name: str, what: str) -> Reading[bool]:
    """A boolean property of a cmdlet's single output object, or why it could not be read."""
    if isinstance(output, BaseException):
        return _failed(output)
    if not output:
        return Reading.failed(f"Exchange returned no {what}")
    return Reading(value=bool(output[0].get(name)))
