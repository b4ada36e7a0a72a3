"""A simulated Microsoft cloud: the endpoints the bot talks to, speaking the real protocols, on 127.0.0.1 only.
The tests run against it, and so does `itdr demo` (nothing real, nothing leaves the machine).

It serves, over real HTTPS on 127.0.0.1 (one port per service, like separate hosts):

* login (authority): OIDC discovery `/{tenant}/v2.0/.well-known/openid-configuration`, instance
  discovery `/common/discovery/instance`, and the client-credentials token endpoint
  `/{tenant}/oauth2/v2.0/token` (client secret or a private_key_jwt client assertion, verified);
* Graph v1.0: the readiness-check reads and `$batch`;
* Exchange admin API: `/adminapi/beta/{tenant}/InvokeCommand`.

msal only accepts https authorities (msal/authority.py `canonicalize`), so the fake generates a
throwaway CA and server certificate; point SSL_CERT_FILE/REQUESTS_CA_BUNDLE at `fake.ca_path`.

Usage (tests, a benchmark script, the demo):

    with FakeMicrosoft() as fake:
        fake.add_tenant(TenantScenario(tenant_id="...", domains=["contoso.onmicrosoft.com"]))
        with fake.trust_env():                 # SSL_CERT_FILE / REQUESTS_CA_BUNDLE -> fake CA
            settings = fake.settings()         # Settings pointing at the fake
            ...
        fake.requests                          # everything that was asked, in order
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.settings import Settings
from catalog import Catalog, Kind

# Microsoft Graph application permissions (appRoles) from microsoft-identifiers.yaml: (value, id, displayName).
GRAPH_APP_ROLES: tuple[tuple[str, str, str], ...] = (
    (
        "AiEnterpriseInteraction.Read.All",
        "839c90ab-5771-41ee-aef8-a562e8487c1e",
        "Read all AI enterprise interactions.",
    ),
    ("Application.ReadWrite.All", "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9", "Read and write all applications"),
    (
        "AppRoleAssignment.ReadWrite.All",
        "06b708a9-e830-4db3-a914-8e69da51d44f",
        "Manage app permission grants and app role assignments",
    ),
    ("AuditLog.Read.All", "b0afded3-3588-46d8-8b3d-9842eff778da", "Read all audit log data"),
    (
        "AuditLogsQuery.Read.All",
        "5e1e9171-754d-478c-812c-f1755a9a4c2d",
        "Read audit logs data from all services",
    ),
    (
        "CloudApp-Discovery.Read.All",
        "64a59178-dad3-4673-89db-84fdcd622fec",
        "Read all discovered cloud applications data",
    ),
    (
        "DelegatedAdminRelationship.Read.All",
        "f6e9e124-4586-492f-adc0-c6f96e4823fd",
        "Read Delegated Admin relationships with customers",
    ),
    ("Device.Read.All", "7438b122-aefc-4978-80ed-43db9fcc7715", "Read all devices"),
    (
        "DeviceManagementApps.ReadWrite.All",
        "78145de6-330d-4800-a6ce-494ff2d33d07",
        "Read and write Microsoft Intune apps",
    ),
    (
        "DeviceManagementConfiguration.ReadWrite.All",
        "9241abd9-d0e6-425a-bd4f-47ba86e767a4",
        "Read and write Microsoft Intune device configuration and policies",
    ),
    (
        "DeviceManagementManagedDevices.PrivilegedOperations.All",
        "5b07b0dd-2377-4e44-a38d-703f09a0dc3c",
        "Perform user-impacting remote actions on Microsoft Intune devices",
    ),
    (
        "DeviceManagementManagedDevices.ReadWrite.All",
        "243333ab-4d21-40cb-a475-36241daa0842",
        "Read and write Microsoft Intune devices",
    ),
    (
        "DeviceManagementRBAC.ReadWrite.All",
        "e330c4f0-4170-414e-a55a-2f022ec2b57b",
        "Read and write Microsoft Intune RBAC settings",
    ),
    (
        "DeviceManagementServiceConfig.ReadWrite.All",
        "5ac13192-7ace-4fcf-b828-1a26f28068ee",
        "Read and write Microsoft Intune configuration",
    ),
    ("Directory.ReadWrite.All", "19dbc75e-c2e2-444c-a770-ec69d8559fc7", "Read and write directory data"),
    (
        "DirectoryRecommendations.ReadWrite.All",
        "0e9eea12-4f01-45f6-9b8d-3ea4c8144158",
        "Read and update all Azure AD recommendations",
    ),
    ("Domain.Read.All", "dbb9058a-0e50-45d7-ae91-66909b5d4664", "Read domains"),
    ("EduRoster.Read.All", "e0ac9e1b-cb65-4fc5-87c5-1a8bc181f648", "Read the organization's roster"),
    (
        "Files.ReadWrite.All",
        "75359482-378d-4052-8f01-80520e7db3cd",
        "Read and write files in all site collections",
    ),
    ("Group.Read.All", "5b567255-7703-4780-807c-7be8301ae99b", "Read all groups"),
    ("Group.ReadWrite.All", "62a82d76-70ea-41e2-9197-370581804d09", "Read and write all groups"),
    ("IdentityProvider.Read.All", "e321f0bb-e7f7-481e-bb28-e3b0b32d4bd0", "Read identity providers"),
    (
        "IdentityRiskEvent.ReadWrite.All",
        "db06fb33-1953-4b7b-a2ac-f1e2c854f7ae",
        "Read and write all risk detection information",
    ),
    (
        "IdentityRiskyServicePrincipal.ReadWrite.All",
        "cb8d6980-6bcb-4507-afec-ed6de3a2d798",
        "Read and write all identity risky service principal information",
    ),
    (
        "IdentityRiskyUser.Read.All",
        "dc5007c0-2d7d-4c42-879c-2dab87571379",
        "Read all identity risky user information",
    ),
    (
        "IdentityRiskyUser.ReadWrite.All",
        "656f6061-f9fe-4807-9708-6a2e0934df76",
        "Read and write all risky user information",
    ),
    ("Mail.ReadBasic.All", "693c5e45-0940-467d-9b8a-1022fb9d42ef", "Read basic mail in all mailboxes"),
    ("Mail.ReadWrite", "e2a3a72e-5f79-4c64-b1b1-878b674786c9", "Read and write mail in all mailboxes"),
    (
        "MailboxSettings.ReadWrite",
        "6931bccd-447a-43d1-b442-00a195474933",
        "Read and write all user mailbox settings",
    ),
    (
        "OnPremDirectorySynchronization.Read.All",
        "bb70e231-92dc-4729-aff5-697b3f04be95",
        "Read all on-premises directory synchronization information",
    ),
    (
        "Organization.ReadWrite.All",
        "292d869f-3427-49a8-9dab-8c70152b74e9",
        "Read and write organization information",
    ),
    (
        "OrganizationalBranding.ReadWrite.All",
        "d2ebfbc1-a5f8-424b-83a6-56ab5927a73c",
        "Read and write organizational branding information",
    ),
    (
        "PartnerSecurity.ReadWrite.All",
        "04a2c935-5b4b-474a-be42-11f53111f271",
        "Read security alerts and update status of security alerts of customer with CSP relationship",
    ),
    ("Policy.Read.All", "246dd0d5-5bd0-4def-940b-0421030a5b68", "Read your organization's policies"),
    (
        "Policy.ReadWrite.AccessReview",
        "77c863fd-06c0-47ce-a7eb-49773e89d319",
        "Read and write your organization's directory access review default policy",
    ),
    (
        "Policy.ReadWrite.ApplicationConfiguration",
        "be74164b-cff1-491c-8741-e671cb536e13",
        "Read and write your organization's application configuration policies",
    ),
    (
        "Policy.ReadWrite.AuthenticationFlows",
        "25f85f3c-f66c-4205-8cd5-de92dd7f0cec",
        "Read and write authentication flow policies",
    ),
    (
        "Policy.ReadWrite.AuthenticationMethod",
        "29c18626-4985-4dcd-85c0-193eef327366",
        "Read and write all authentication method policies",
    ),
    (
        "Policy.ReadWrite.Authorization",
        "fb221be6-99f2-473f-bd32-01c6a0e9ca3b",
        "Read and write your organization's authorization policy",
    ),
    (
        "Policy.ReadWrite.ConditionalAccess",
        "01c0a623-fc9b-48e9-b794-0756f8e8f067",
        "Read and write your organization's conditional access policies",
    ),
    (
        "Policy.ReadWrite.ConsentRequest",
        "999f8c63-0a38-4f1b-91fd-ed1947bdd1a9",
        "Read and write your organization's consent request policy",
    ),
    (
        "Policy.ReadWrite.CrossTenantAccess",
        "338163d7-f101-4c92-94ba-ca46fe52447c",
        "Read and write your organization's cross tenant access policies",
    ),
    (
        "Policy.ReadWrite.DeviceConfiguration",
        "230fb2d5-aa21-49c1-bfa7-ae1be179d867",
        "Read and write your organization's device configuration policies",
    ),
    (
        "Policy.ReadWrite.ExternalIdentities",
        "03cc4f92-788e-4ede-b93f-199424d144a5",
        "Read and write your organization's external identities policy",
    ),
    (
        "Policy.ReadWrite.FeatureRollout",
        "2044e4f1-e56c-435b-925c-44cd8f6ba89a",
        "Read and write feature rollout policies",
    ),
    (
        "Policy.ReadWrite.IdentityProtection",
        "2dcf8603-09eb-4078-b1ec-d30a1a76b873",
        "Read and write your organization’s identity protection policy",
    ),
    (
        "Policy.ReadWrite.PermissionGrant",
        "a402ca1c-2696-4531-972d-6e5ee4aa11ea",
        "Manage consent and permission grant policies",
    ),
    (
        "Policy.ReadWrite.SecurityDefaults",
        "1c6e93a6-28e2-4cbb-9f64-1a46a821124d",
        "Read and write your organization's security defaults policy",
    ),
    (
        "Policy.ReadWrite.TrustFramework",
        "79a677f7-b79d-40d0-a36a-3e6f8688dd7a",
        "Read and write your organization's trust framework policies",
    ),
    ("Presence.Read.All", "a70e0c2d-e793-494c-94c4-118fa0a67f42", "Read presence information for all users"),
    ("Reports.Read.All", "230c1aed-a721-4c5d-9cb4-a90514e508ef", "Read all usage reports"),
    (
        "ReportSettings.ReadWrite.All",
        "2a60023f-3219-47ad-baa4-40e17cd02a1d",
        "Read and write all admin report settings",
    ),
    (
        "RoleManagement.Read.All",
        "c7fbd983-d9aa-4fa7-84b8-17382c103bc4",
        "Read role management data for all RBAC providers",
    ),
    (
        "RoleManagement.ReadWrite.Directory",
        "9e3f62cf-ca93-4989-b6ce-bf83c28f9fe8",
        "Read and write all directory RBAC settings",
    ),
    (
        "SecurityActions.Read.All",
        "5e0edab9-c148-49d0-b423-ac253e121825",
        "Read your organization's security actions",
    ),
    (
        "SecurityActions.ReadWrite.All",
        "f2bf083f-0179-402a-bedb-b2784de8a49b",
        "Read and update your organization's security actions",
    ),
    ("SecurityAlert.Read.All", "472e4a4d-bb4a-4026-98d1-0b0d74cb74a5", "Read all security alerts"),
    (
        "SecurityAlert.ReadWrite.All",
        "ed4fca05-be46-441f-9803-1873825f8fdb",
        "Read and write to all security alerts",
    ),
    (
        "SecurityEvents.Read.All",
        "bf394140-e372-4bf9-a898-299cfc7564e5",
        "Read your organization’s security events",
    ),
    (
        "SecurityEvents.ReadWrite.All",
        "d903a879-88e0-4c09-b0c9-82f6a1333f84",
        "Read and update your organization’s security events",
    ),
    ("SecurityIncident.Read.All", "45cc0394-e837-488b-a098-1918f48d186c", "Read all security incidents"),
    ("ServiceHealth.Read.All", "79c261e0-fe76-4144-aad5-bdc68fbe4037", "Read service health"),
    (
        "SharePointTenantSettings.ReadWrite.All",
        "19b94e34-907c-4f43-bde9-38b1909ed408",
        "Read and change SharePoint and OneDrive tenant settings",
    ),
    (
        "Sites.ReadWrite.All",
        "9492366f-7969-46a4-8d15-ed1a20078fff",
        "Read and write items in all site collections",
    ),
    (
        "TeamsAppInstallation.Read.All",
        "0fdf35a5-82f8-41ff-9ded-0b761cc73512",
        "Read installed Teams apps for all installation scopes",
    ),
    (
        "TeamsAppInstallation.ReadWriteForChat.All",
        "9e19bae1-2623-4c4f-ab6e-2664615ff9a0",
        "Manage Teams apps for all chats",
    ),
    (
        "TeamsAppInstallation.ReadWriteForTeam.All",
        "5dad17ba-f6cc-4954-a5a2-a0dcc95154f0",
        "Manage Teams apps for all teams",
    ),
    (
        "TeamsAppInstallation.ReadWriteForUser.All",
        "74ef0291-ca83-4d02-8c7e-d2391e6a444f",
        "Manage Teams apps for all users",
    ),
    (
        "TeamSettings.ReadWrite.All",
        "bdd80a03-d9bc-451d-b7c4-ce7c63fe3c8f",
        "Read and change all teams' settings",
    ),
    ("User.Export.All", "405a51b5-8d8d-430b-9842-8be4b0e9f324", "Export user's data"),
    ("User.Invite.All", "09850681-111b-4a89-9bed-3f2cae46d706", "Invite guest users to the organization"),
    ("User.ManageIdentities.All", "c529cfca-c91b-489c-af2b-d92990b66ce6", "Manage all users' identities"),
    (
        "User.EnableDisableAccount.All",
        "3011c876-62b7-4ada-afa2-506cbbecc68c",
        "Enable and disable user accounts",
    ),
    ("User.Read.All", "df021288-bdef-4463-88db-98f22de89214", "Read all users' full profiles"),
    ("User.ReadWrite.All", "741f803b-c850-494e-b5df-cde7c675a1ca", "Read and write all users' full profiles"),
    (
        "UserAuthenticationMethod.ReadWrite.All",
        "50483e42-d915-4231-9639-7fdb7fd190e5",
        "Read and write all users' authentication methods",
    ),
)
EXCHANGE_APP_ROLES: tuple[tuple[str, str, str], ...] = (
    ("Exchange.ManageAsApp", "dc50a0fb-09a3-484d-be87-e023b12c6440", "Manage Exchange As Application"),
    ("Exchange.ManageAsAppV2", "ea3d980d-ebc7-4be4-8298-a167e5b8797c", "Exchange.ManageAsAppV2"),
    (
        "Exchange.AdminAPI.ManageAsApp",
        "95930782-af91-4e2e-89b7-e34ce33a0450",
        "Exchange.AdminAPI.ManageAsApp",
    ),
)
MANAGEMENT_APP_ROLES: tuple[tuple[str, str, str], ...] = (
    ("ActivityFeed.Read", "594c1fb6-4f81-4475-ae41-0c394909246c", "Read activity data for your organization"),
    (
        "ActivityFeed.ReadDlp",
        "4807a72c-ad38-4250-94c9-4eabfe26cd55",
        "Read DLP policy events including detected sensitive data",
    ),
    (
        "ServiceHealth.Read",
        "e2cea78f-e743-4d8f-a16a-75b629a038ae",
        "Read service health information for your organization",
    ),
)
# Entra built-in roles: template id -> display name.
ENTRA_ROLES: dict[str, str] = {
    "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3": "Application Administrator",
    "0526716b-113d-4c15-b2c8-68e3c22b9f80": "Authentication Policy Administrator",
    "158c047a-c907-4556-b7ef-446551a6b5f7": "Cloud Application Administrator",
    "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9": "Conditional Access Administrator",
    "29232cdf-9323-42fd-ade2-1d097af3e4de": "Exchange Administrator",
    "3a2c62db-5318-420d-8d74-23affee5d9d5": "Intune Administrator",
    "92ed04bf-c94a-4b82-9729-b799a7a4c178": "Organizational Branding Administrator",
    "7be44c8a-adaf-4e2a-84d6-ab2649e08a13": "Privileged Authentication Administrator",
    "194ae4cb-b126-40b2-bd5b-6091b380977d": "Security Administrator",
    "69091246-20e8-4a56-aa4d-066075b2a7a8": "Teams Administrator",
    "fe930be7-5e62-47db-91af-98c3a49a38b1": "User Administrator",
    "62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
    "f2ef992c-3afb-46b9-b7cf-a126ee74c451": "Global Reader",
}
ORG_MANAGEMENT_ROLES: tuple[str, ...] = (
    "Audit Logs",
    "Mail Recipients",
    "Organization Configuration",
    "Transport Rules",
    "Role Management",
)

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
MANAGEMENT_APP_ID = "c5393580-f805-4401-95e8-94b7a6ef2fc2"
PARTNER_CENTER_APP_ID = "fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd"
RESOURCE_APPS: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    GRAPH_APP_ID: ("Microsoft Graph", GRAPH_APP_ROLES),
    EXCHANGE_APP_ID: ("Office 365 Exchange Online", EXCHANGE_APP_ROLES),
    MANAGEMENT_APP_ID: ("Office 365 Management APIs", MANAGEMENT_APP_ROLES),
    # Partner Center exposes no app roles, only the delegated user_impersonation scope (reference file).
    PARTNER_CENTER_APP_ID: ("Microsoft Partner Center", ()),
}
# Licensing ids from the reference (subscribedSkus doc sample and the service-plan reference).
SKU_E5 = ("c7df2760-2c81-4ef7-b578-5b5392b571df", "ENTERPRISEPREMIUM")
PLAN_P2 = ("eec0eb4f-6444-4f95-aba0-50c24d67f998", "AAD_PREMIUM_P2")
PLAN_P1 = ("41781fb2-bc02-4b7c-bd55-b576c07bb09d", "AAD_PREMIUM")
PLAN_MCAS = ("8c098270-9dd4-4350-9b30-ba4703f3b36b", "ADALLOM_S_O365")
PLAN_EXCHANGE = "113feb6c-3fe4-4440-bddc-54d774bf0318"
SECURITY_DEFAULTS_POLICY_ID = "00000000-0000-0000-0000-000000000005"  # fixed id in the Graph doc sample
EXO_ANCHOR = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@"
DEFAULT_TARGET_APP_ID = "11111111-2222-3333-4444-555555555555"  # placeholder for the Huntress app
DEFAULT_CLIENT_ID = "66666666-7777-8888-9999-000000000000"  # placeholder for the bot's own app


def sample_ca_policy() -> dict[str, Any]:
    """The conditionalAccessPolicy from the Graph doc sample (plus the clientApplications shape)."""
    return {
        "id": "ad8d2b4a-8d30-413f-88b8-144c6c8d98d9",
        "displayName": "SimplePolicy1",
        "state": "disabled",
        "conditions": {
            "clientAppTypes": ["all"],
            "applications": {"includeApplications": ["None"], "excludeApplications": [], "includeUserActions": []},
            "users": {
                "includeUsers": ["None"],
                "excludeUsers": [],
                "includeGroups": [],
                "excludeGroups": [],
                "includeRoles": [],
                "excludeRoles": [],
            },
            "clientApplications": {
                "includeServicePrincipals": ["ServicePrincipalsInMyTenant"],
                "excludeServicePrincipals": [],
                "servicePrincipalFilter": None,
            },
        },
        "grantControls": {
            "operator": "OR",
            "builtInControls": ["block"],
            "customAuthenticationFactors": [],
            "termsOfUse": [],
        },
    }


def _object_id(tenant_id: str, name: str) -> str:
    """Deterministic per-tenant object id (real object ids are random per tenant)."""
    return str(uuid.uuid5(uuid.UUID(tenant_id), name))


def _opaque_id(*parts: str) -> str:
    """Graph-style opaque ids (appRoleAssignment/grant ids are base64url strings)."""
    return base64.urlsafe_b64encode(hashlib.sha256("|".join(parts).encode()).digest()[:33]).decode().rstrip("=")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# --- Scenario and faults -----------------------------------------------------------------------


@dataclass
class TenantScenario:
    """What one fake customer tenant looks like."""

    tenant_id: str
    domains: list[str] = field(default_factory=lambda: ["contoso.onmicrosoft.com"])
    display_name: str = "Contoso"
    # Our (the bot's) app in this tenant: False -> AADSTS700016 at the token endpoint.
    app_in_tenant: bool = True
    # Force an AADSTS error for this tenant's token requests (e.g. 7000229, 65001, 7000222).
    token_error: int | None = None
    # The target (Huntress) app's service principal.
    sp_exists: bool = True
    sp_enabled: bool = True
    sp_display_name: str = "Huntress Security Platform (Direct)"
    app_owner_tenant_id: str = "65415bb1-9267-4313-bbf5-ae259732ee12"  # placeholder from the doc sample
    # Granted application permissions: (resource appId, appRoleId).
    app_role_assignments: list[tuple[str, str]] = field(default_factory=list)
    # Delegated grants: (resource appId, space-separated scope string).
    delegated_grants: list[tuple[str, str]] = field(default_factory=list)
    # Entra directory roles held by the SP (template ids), active and directory-wide.
    directory_roles: list[str] = field(default_factory=list)
    # PIM: roles the SP is only eligible for (template ids, directory-wide), and roles assigned to it active but
    # at a narrower scope (template id -> directoryScopeId, e.g. "/administrativeUnits/{id}").
    eligible_roles: list[str] = field(default_factory=list)
    scoped_roles: dict[str, str] = field(default_factory=dict)
    # Roles of `directory_roles` held through a time-bound active assignment: template id -> when it ends. Past
    # its end the assignment is gone, as Entra removes an expired one.
    role_ends: dict[str, dt.datetime] = field(default_factory=dict)
    p2_licence: bool = True
    ca_policies: list[dict[str, Any]] = field(default_factory=list)
    security_defaults: bool = False
    # Exchange
    exchange_licensed: bool = True
    audit_log_ingestion: bool = True
    dehydrated: bool = False
    org_management_roles: list[str] = field(default_factory=lambda: list(ORG_MANAGEMENT_ROLES))
    # Entra's directory audit (auditLogs/directoryAudits), Microsoft-shaped entries, oldest first.
    audit_events: list[dict[str, Any]] = field(default_factory=list)
    audit_forbidden: bool = False  # the app lacks AuditLog.Read.All: 403, as Graph answers

    @property
    def initial_domain(self) -> str:
        return next((d for d in self.domains if d.endswith(".onmicrosoft.com")), self.domains[0])

    @property
    def sp_id(self) -> str:
        return _object_id(self.tenant_id, "target-service-principal")

    def resource_sp_id(self, app_id: str) -> str:
        return _object_id(self.tenant_id, f"resource-sp-{app_id}")

    # Directory-audit entries as Entra writes them, not as the code would like them. Sources:
    # ../shared/reference/entra-audit-and-ops.md §1 (shapes observed by several independent parsers of real exports);
    # https://learn.microsoft.com/graph/api/resources/directoryaudit (the resource and its filters);
    # https://learn.microsoft.com/entra/identity/monitoring-health/reference-audit-activities (activity names).
    # modifiedProperties values are JSON-encoded strings ("\"Mail.ReadWrite\"", "[true]").
    def _audit(self, activity: str, category: str, operation: str, targets: list[dict[str, Any]], *, by: str,
               at: dt.datetime | None, service: str = "Core Directory") -> None:
        when = (at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
        self.audit_events.append({
            "id": f"Directory_{uuid.uuid4().hex}",
            "category": category,
            "correlationId": str(uuid.uuid4()),
            "result": "success",
            "resultReason": "",
            "activityDisplayName": activity,
            "activityDateTime": when,
            "loggedByService": service,
            "operationType": operation,
            "initiatedBy": {"user": {"id": str(uuid.uuid4()), "displayName": None, "userPrincipalName": by,
                                     "ipAddress": "203.0.113.7", "userType": None, "homeTenantId": None,
                                     "homeTenantName": None}, "app": None},
            "targetResources": [{"userPrincipalName": None, "groupType": None, **target} for target in targets],
            "additionalDetails": [{"key": "User-Agent", "value": "Mozilla/5.0"}],
        })

    def make_eligible_only(self, template_id: str) -> None:
        """PIM: the role stops being active and becomes an eligible assignment (as an admin converting it does)."""
        self.directory_roles = [t for t in self.directory_roles if t != template_id]
        self.eligible_roles.append(template_id)

    def time_bound(self, template_id: str, end: dt.datetime) -> None:
        """The role's active assignment is time-bound (PIM "Assignment type: Active", with an end date)."""
        if template_id not in self.directory_roles:
            self.directory_roles.append(template_id)
        self.role_ends[template_id] = end

    def held_roles(self) -> list[str]:
        """The active, directory-wide roles right now (a time-bound one past its end is no longer held)."""
        now = dt.datetime.now(dt.UTC)
        return [t for t in self.directory_roles if t not in self.role_ends or self.role_ends[t] > now]

    def scope_role(self, template_id: str, directory_scope_id: str | None = None) -> str:
        """The role's active assignment moves to an administrative unit; returns its directoryScopeId."""
        scope = directory_scope_id or f"/administrativeUnits/{_object_id(self.tenant_id, 'au-' + template_id)}"
        self.directory_roles = [t for t in self.directory_roles if t != template_id]
        self.scoped_roles[template_id] = scope
        return scope

    @staticmethod
    def _props(removed: bool, **values: object) -> list[dict[str, Any]]:
        """modifiedProperties: JSON-encoded values, on the old side for a removal, the new side for an add."""
        side = "oldValue" if removed else "newValue"
        other = "newValue" if removed else "oldValue"
        return [{"displayName": name.replace("__", "."), side: json.dumps(value), other: None}
                for name, value in values.items()]

    def revoke(self, resource_app_id: str, value: str, *, by: str = "alex@contoso.onmicrosoft.com",
               at: dt.datetime | None = None, client_sp_id: str | None = None) -> None:
        """An admin removes one application permission: the grant goes (when it is the ITDR app's), and Entra logs
        "Remove app role assignment from service principal" whose only target is the *resource* service principal
        (e.g. Microsoft Graph); the client is in `ServicePrincipal.ObjectID`, the permission in `AppRole.Value`.
        `client_sp_id`: another app's service principal (the same removal, on someone else)."""
        resource_name, app_roles = RESOURCE_APPS[resource_app_id]
        roles = {name: role_id for name, role_id, _ in app_roles}
        client = client_sp_id or self.sp_id
        if client == self.sp_id:
            self.app_role_assignments.remove((resource_app_id, roles[value]))
        self._audit("Remove app role assignment from service principal", "ApplicationManagement", "Unassign", [{
            "id": self.resource_sp_id(resource_app_id), "displayName": resource_name, "type": "ServicePrincipal",
            "modifiedProperties": self._props(
                True, AppRole__Id=roles[value], AppRole__Value=value, AppRole__DisplayName=value,
                ServicePrincipal__ObjectID=client,
                ServicePrincipal__DisplayName=self.sp_display_name if client == self.sp_id else "Another app",
                ServicePrincipal__AppId=str(uuid.uuid5(uuid.UUID(client), "app")),
            ),
        }], by=by, at=at)

    def consent(self, grants: list[tuple[str, str]], *, by: str = "alex@contoso.onmicrosoft.com",
                at: dt.datetime | None = None) -> None:
        """A Global Administrator grants admin consent: the app's static application permissions (resource appId,
        appRoleId) become assignments, and Entra logs "Consent to application" on the service principal."""
        for grant in grants:
            if grant not in self.app_role_assignments:
                self.app_role_assignments.append(grant)
        self._audit("Consent to application", "ApplicationManagement", "Assign", [{
            "id": self.sp_id, "displayName": self.sp_display_name, "type": "ServicePrincipal",
            "modifiedProperties": self._props(False, ConsentContext__IsAdminConsent="True",
                                              ConsentAction__Permissions=f"{len(grants)} application permissions"),
        }], by=by, at=at)

    def remove_role(self, template_id: str, *, eligible: bool = False, by: str = "alex@contoso.onmicrosoft.com",
                    at: dt.datetime | None = None) -> None:
        """An admin removes a directory role from the app: "Remove member from role" (or, under PIM, "Remove
        eligible member from role", logged by PIM) with the app's service principal as the target and the role in
        `Role.DisplayName` / `Role.TemplateId` / `Role.ObjectID`."""
        if template_id in self.directory_roles:
            self.directory_roles.remove(template_id)
        activity = "Remove eligible member from role" if eligible else "Remove member from role"
        self._audit(activity, "RoleManagement", "Unassign", [{
            "id": self.sp_id, "displayName": self.sp_display_name, "type": "ServicePrincipal",
            "modifiedProperties": self._props(
                True, Role__ObjectID=_object_id(self.tenant_id, f"directory-role-{template_id}"),
                Role__DisplayName=ENTRA_ROLES[template_id], Role__TemplateId=template_id,
                Role__WellKnownObjectName=ENTRA_ROLES[template_id].replace(" ", ""),
            ),
        }], by=by, at=at, service="PIM" if eligible else "Core Directory")

    def disable_sp(self, *, by: str = "alex@contoso.onmicrosoft.com", at: dt.datetime | None = None) -> None:
        """An admin disables the app: "Update service principal", the SP as target, `AccountEnabled` [true] →
        [false] (with `Included Updated Properties` naming it)."""
        self.sp_enabled = False
        self._audit("Update service principal", "ApplicationManagement", "Update", [{
            "id": self.sp_id, "displayName": self.sp_display_name, "type": "ServicePrincipal",
            "modifiedProperties": [
                {"displayName": "AccountEnabled", "oldValue": "[true]", "newValue": "[false]"},
                {"displayName": "Included Updated Properties", "oldValue": None, "newValue": '"AccountEnabled"'},
            ],
        }], by=by, at=at)

    def remove_delegated(self, resource_app_id: str, *, by: str = "alex@contoso.onmicrosoft.com",
                         at: dt.datetime | None = None) -> None:
        """An admin removes the app's delegated grant on a resource: "Remove delegated permission grant", the
        resource SP as first target with `DelegatedPermissionGrant.Scope` and `ServicePrincipal.ObjectID`, the
        client SP as second target."""
        scope = next(s for app, s in self.delegated_grants if app == resource_app_id)
        self.delegated_grants.remove((resource_app_id, scope))
        self._audit("Remove delegated permission grant", "ApplicationManagement", "Unassign", [
            {"id": self.resource_sp_id(resource_app_id), "displayName": RESOURCE_APPS[resource_app_id][0],
             "type": "ServicePrincipal",
             "modifiedProperties": self._props(True, DelegatedPermissionGrant__Scope=f" {scope} ",
                                               DelegatedPermissionGrant__ClientId=self.sp_id,
                                               ServicePrincipal__ObjectID=self.sp_id)},
            {"id": self.sp_id, "displayName": None, "type": "ServicePrincipal", "modifiedProperties": []},
        ], by=by, at=at)

    def delete_sp(self, app_id: str = DEFAULT_TARGET_APP_ID, *, by: str = "alex@contoso.onmicrosoft.com",
                  at: dt.datetime | None = None) -> None:
        """An admin deletes the app's service principal: "Remove service principal", the SP as target, its
        `AppPrincipalId` (the appId) among the properties [est: reference §1]."""
        self.sp_exists = False
        self._audit("Remove service principal", "ApplicationManagement", "Delete", [{
            "id": self.sp_id, "displayName": self.sp_display_name, "type": "ServicePrincipal",
            "modifiedProperties": self._props(True, AccountEnabled=[True], AppPrincipalId=[app_id],
                                              DisplayName=[self.sp_display_name]),
        }], by=by, at=at)

    def grant_all(self, resource_app_id: str = GRAPH_APP_ID, *values: str) -> None:
        """Grant application permissions by name (e.g. "Directory.Read.All")."""
        roles = {value: role_id for value, role_id, _ in RESOURCE_APPS[resource_app_id][1]}
        for value in values:
            self.app_role_assignments.append((resource_app_id, roles[value]))


@dataclass
class Fault:
    """Answer `status` for matching requests: the nth match and the following `times - 1`.

    `pattern` is a regex searched in "path?query" (decoded). `times=None` fails forever.
    `in_batch`: None matches both, True only $batch sub-requests, False only real HTTP requests.
    """

    service: str | None
    pattern: str
    status: int
    nth: int = 1
    times: int | None = 1
    retry_after: int | None = None
    in_batch: bool | None = None
    body: Any = None
    seen: int = 0

    def hit(self, service: str, target: str, in_batch: bool) -> bool:
        if self.service not in (None, service) or (self.in_batch is not None and self.in_batch != in_batch):
            return False
        if not re.search(self.pattern, target):
            return False
        self.seen += 1
        if self.seen < self.nth:
            return False
        return self.times is None or self.seen < self.nth + self.times


@dataclass(frozen=True)
class RecordedRequest:
    service: str  # "login", "graph", "exchange"
    method: str
    path: str
    query: dict[str, str]
    in_batch: bool
    tenant: str | None
    status: int
    headers: dict[str, str]
    body: Any = None


_STATUS_TEXT = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


# --- TLS material ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_path: Path
    server_cert_path: Path
    server_key_path: Path
    client_pem_path: Path  # the app's certificate credential: private key + certificate
    client_certificate: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and an app client certificate."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("itdr-bot test CA"))
        .issuer_name(_name("itdr-bot test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # msal signs client assertions with RS256/PS256, so the app credential is RSA.
    client_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("itdr-bot app credential"))
        .issuer_name(_name("itdr-bot app credential"))
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(client_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = TlsFiles(
        ca_path=directory / "ca.pem",
        server_cert_path=directory / "server.pem",
        server_key_path=directory / "server-key.pem",
        client_pem_path=directory / "app-credential.pem",
        client_certificate=client_cert,
    )
    files.ca_path.write_bytes(ca_cert.public_bytes(pem))
    files.server_cert_path.write_bytes(server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    files.server_key_path.write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.client_pem_path.write_bytes(
        client_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + client_cert.public_bytes(pem)
    )
    return files


# --- The fake ------------------------------------------------------------------------------------

SERVICES = ("login", "graph", "exchange")


class FakeMicrosoft:
    """Fake login + Graph + Exchange endpoints on 127.0.0.1, one port each."""

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = "fake-secret-value-Qx7~",
        target_app_id: str = DEFAULT_TARGET_APP_ID,
        latency: float = 0.0,
        page_size: int | None = None,
        expires_in: int = 3599,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.target_app_id = target_app_id
        self.latency = latency  # seconds added to every HTTP request (not per batch sub-request)
        # seconds before Entra's directory audit answers: a heavy, throttled API, often the slowest read of all
        self.audit_delay = 0.0
        self.page_size = page_size  # split Graph/Exchange collections into pages of this size
        self.audit_queries: list[str] = []  # every directoryAudits $filter asked, for tests of the query
        self.expires_in = expires_in
        self.expired_secret = False  # answer the right secret with AADSTS7000222
        # The checking app's own registration, listed by `GET /applications` in its home tenant only.
        self.home_tenant_id: str | None = None
        self.application_read_granted = True  # False: 403 Authorization_RequestDenied, as Graph answers
        self.password_credentials: list[dict[str, Any]] = []  # see `password_credential`
        self.key_credentials: list[dict[str, Any]] = []
        self.tenants: dict[str, TenantScenario] = {}
        # What the target app asks for statically (requiredResourceAccess): admin consent grants these.
        self.consent_grants: list[tuple[str, str]] = []
        self.consent_admin = "admin"  # the local part of the Global Administrator who consents, per tenant
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self._tokens: dict[str, tuple[str, str]] = {}  # access token -> (tenant id, service)
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="fake-microsoft-")
        self.tls = make_tls_files(Path(self._dir.name))
        self.ports: dict[str, int] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def listen(self, backlog: int = 128) -> list[socket.socket]:
        """One listening socket per service on a free loopback port (inheritable: forked servers share them)."""
        sockets: list[socket.socket] = []
        for service in SERVICES:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(backlog)
            sock.set_inheritable(True)
            self.ports[service] = sock.getsockname()[1]
            sockets.append(sock)
        self._service_by_port = {port: service for service, port in self.ports.items()}
        return sockets

    def start(self) -> FakeMicrosoft:
        sockets = self.listen()
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])
        config = uvicorn.Config(
            app,
            ssl_certfile=str(self.tls.server_cert_path),
            ssl_keyfile=str(self.tls.server_key_path),
            log_config=None,  # leave the test process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,  # clients in tests may leave keep-alive connections open
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": sockets}, name="fake-microsoft", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake Microsoft server did not start")
            time.sleep(0.01)
        self._sockets = sockets
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in getattr(self, "_sockets", []):
            sock.close()
        self._dir.cleanup()

    def __enter__(self) -> FakeMicrosoft:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration -------------------------------------------------------------------------

    def url(self, service: str) -> str:
        return f"https://127.0.0.1:{self.ports[service]}"

    @property
    def authority_host(self) -> str:
        return self.url("login")

    @property
    def ca_path(self) -> Path:
        return self.tls.ca_path

    @property
    def client_certificate_path(self) -> Path:
        return self.tls.client_pem_path

    def add_tenant(self, scenario: TenantScenario) -> TenantScenario:
        with self._lock:
            self.tenants[scenario.tenant_id.lower()] = scenario
        return scenario

    def settings(self, *, certificate: bool = False, **overrides: Any) -> Settings:
        """Settings pointing at this fake (secret credential unless certificate=True)."""
        values: dict[str, Any] = {
            "itdr_client_id": self.client_id,
            "itdr_target_app_id": self.target_app_id,
            "itdr_authority_host": self.url("login"),
            "itdr_graph_url": self.url("graph"),
            "itdr_exchange_url": self.url("exchange"),
            "itdr_http_timeout_seconds": 10.0,
        }
        if certificate:
            values["itdr_client_certificate"] = self.tls.client_pem_path
        else:
            values["itdr_client_secret"] = self.client_secret
        values.update(overrides)
        return Settings(_env_file=None, **values)

    def env(self) -> dict[str, str]:
        """Environment that makes requests (msal) and httpx trust the fake's CA."""
        ca = str(self.tls.ca_path)
        return {"SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca, "CURL_CA_BUNDLE": ca}

    @contextlib.contextmanager
    def trust_env(self) -> Iterator[None]:
        """Temporarily point SSL_CERT_FILE/REQUESTS_CA_BUNDLE at the fake CA (and drop proxies)."""
        names = [*self.env(), "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        saved = {name: os.environ.get(name) for name in names}
        try:
            for name in names:
                os.environ.pop(name, None)
            os.environ.update(self.env())
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # -- faults --------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def throttle(
        self,
        pattern: str,
        *,
        nth: int = 1,
        times: int | None = 1,
        retry_after: int | None = 1,
        service: str | None = "graph",
        in_batch: bool | None = None,
    ) -> Fault:
        """429 with Retry-After on the nth matching request (and `times - 1` more)."""
        return self.add_fault(Fault(service, pattern, 429, nth, times, retry_after, in_batch))

    def fail(
        self,
        pattern: str,
        status: int = 503,
        *,
        nth: int = 1,
        times: int | None = None,
        retry_after: int | None = None,
        service: str | None = "graph",
        in_batch: bool | None = None,
        body: Any = None,
    ) -> Fault:
        """Fail matching requests with `status`; forever unless `times` is given."""
        return self.add_fault(Fault(service, pattern, status, nth, times, retry_after, in_batch, body))

    def fail_in_batch(
        self, pattern: str, status: int = 429, *, retry_after: int | None = 1, times: int | None = 1, nth: int = 1
    ) -> Fault:
        """Make one $batch sub-request fail while the others in the same batch succeed."""
        return self.add_fault(Fault("graph", pattern, status, nth, times, retry_after, True))

    def clear(self) -> None:
        """Forget recorded requests and faults (scenarios stay)."""
        with self._lock:
            self.requests.clear()
            self.faults.clear()

    # -- inspection ----------------------------------------------------------------------------

    def recorded(
        self, service: str | None = None, *, path: str | None = None, in_batch: bool | None = False
    ) -> list[RecordedRequest]:
        """Recorded requests filtered by service, path regex and batch membership.

        The default (in_batch=False) lists real HTTP round trips only.
        """
        with self._lock:
            items = list(self.requests)
        return [
            r
            for r in items
            if (service is None or r.service == service)
            and (path is None or re.search(path, r.path))
            and (in_batch is None or r.in_batch == in_batch)
        ]

    def round_trips(self, service: str | None = None) -> int:
        return len(self.recorded(service))

    def token_requests(self) -> list[RecordedRequest]:
        return self.recorded("login", path=r"/oauth2/v2\.0/token$")

    # -- HTTP entry point ------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        port = request.scope["server"][1]
        service = self._service_by_port.get(port, "login")
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.audit_delay and request.url.path.endswith("/auditLogs/directoryAudits"):
            await asyncio.sleep(self.audit_delay)
        raw_body = await request.body()
        body: Any = None
        if raw_body and "json" in request.headers.get("content-type", ""):
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = None
        query = dict(request.query_params)
        path = request.url.path
        handler = {
            "login": self._login,
            "graph": self._graph_http,
            "exchange": self._exchange,
        }[service]
        tenant_hint: list[str | None] = [None]
        fault = self._fault(service, path, query, in_batch=False)
        if fault is not None:
            status, headers, payload = self._fault_response(service, fault)
        else:
            status, headers, payload = handler(request.method, path, query, raw_body, body, request, tenant_hint)
        interesting = {
            k: v
            for k, v in request.headers.items()
            if k in ("x-anchormailbox", "prefer", "content-type", "x-ms-throttle-priority", "x-responseformat")
        }
        self._record(
            RecordedRequest(service, request.method, path, query, False, tenant_hint[0], status, interesting, body)
        )
        headers = {"request-id": str(uuid.uuid4()), **headers}
        if isinstance(payload, (dict, list)):
            return JSONResponse(payload, status_code=status, headers=headers)
        return Response(payload or b"", status_code=status, headers=headers)

    def _record(self, item: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(item)

    def _fault(self, service: str, path: str, query: Mapping[str, str], *, in_batch: bool) -> Fault | None:
        target = path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
        with self._lock:
            for fault in self.faults:
                if fault.hit(service, target, in_batch):
                    return fault
        return None

    def _fault_response(self, service: str, fault: Fault) -> tuple[int, dict[str, str], Any]:
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        if fault.body is not None:
            return fault.status, headers, fault.body
        if service == "login":
            return fault.status, headers, {"error": "temporarily_unavailable", "error_description": "Simulated outage."}
        code = _STATUS_TEXT.get(fault.status, "Error")
        message = "Please retry again later." if fault.status == 429 else "Simulated outage."
        return fault.status, headers, (_exo_error if service == "exchange" else _graph_error)(code, message)

    # -- tenants and tokens ------------------------------------------------------------------------

    def _tenant(self, key: str) -> TenantScenario | None:
        key = key.lower()
        with self._lock:
            if key in self.tenants:
                return self.tenants[key]
            for scenario in self.tenants.values():
                if key in (d.lower() for d in scenario.domains):
                    return scenario
        return None

    def _bearer(self, request: Request, service: str) -> TenantScenario | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        with self._lock:
            entry = self._tokens.get(auth[7:])
        if entry is None or entry[1] != service:
            return None
        return self._tenant(entry[0])

    # -- login -----------------------------------------------------------------------------------

    def _aadsts(
        self, code: int, error: str, text: str, status: int = 400
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        return (
            status,
            {},
            {
                "error": error,
                "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} "
                f"Timestamp: {_now()}",
                "error_codes": [code],
                "timestamp": _now(),
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": f"{self.url('login')}/error?code={code}",
            },
        )

    def _tenant_not_found(self, name: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        return self._aadsts(
            90002,
            "invalid_tenant",
            f"Tenant '{name}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud. Check with your subscription administrator, this may happen if there "
            "are no active subscriptions for the tenant.",
        )

    def _openid_configuration(self, tid: str) -> dict[str, Any]:
        base = f"{self.url('login')}/{tid}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{self.url('login')}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.url('graph')}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "tid", "ver"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def _login(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        raw: bytes,
        body: Any,
        request: Request,
        tenant_hint: list[str | None],
    ) -> tuple[int, dict[str, str], Any]:
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts[:3] == ["common", "discovery", "instance"]:
            endpoint = query.get("authorization_endpoint", "")
            m = re.match(r"https://[^/]+/([^/]+)/", endpoint)
            tenant = m.group(1) if m else "common"
            return (
                200,
                {},
                {
                    "tenant_discovery_endpoint": f"{self.url('login')}/{tenant}/v2.0/.well-known/openid-configuration",
                    "api-version": "1.1",
                    "metadata": [
                        {
                            "preferred_network": f"127.0.0.1:{self.ports['login']}",
                            "preferred_cache": f"127.0.0.1:{self.ports['login']}",
                            "aliases": [f"127.0.0.1:{self.ports['login']}"],
                        }
                    ],
                },
            )
        if len(parts) >= 2:
            scenario = self._tenant(parts[0])
            tenant_hint[0] = scenario.tenant_id if scenario else parts[0]
            if method == "GET" and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                if scenario is None:
                    return self._tenant_not_found(parts[0])
                return 200, {}, self._openid_configuration(scenario.tenant_id)
            if method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
                if scenario is None:
                    return self._tenant_not_found(parts[0])
                return self._token(scenario, dict(parse_qsl(raw.decode("utf-8"))))
        if method == "GET" and len(parts) == 2 and parts[1] == "adminconsent":
            return self._admin_consent(self._tenant(parts[0]), query)
        return 404, {}, {"error": "not_found", "error_description": f"No fake for {method} {path}"}

    def _admin_consent(self, scenario: TenantScenario | None, query: Mapping[str, str]
                       ) -> tuple[int, dict[str, str], Any]:
        """The v1 admin-consent endpoint, the admin consenting at once (no sign-in page). Source:
        ../shared/reference/microsoft-apis.md §7 (MicrosoftDocs/entra-docs v2-admin-consent.md): success redirects to
        `redirect_uri?tenant={guid}&state=…&admin_consent=True`; an error carries `error`, `error_description` and
        `state`, and no `tenant`. Without a redirect_uri Microsoft lands on the app's own page: a short one here."""
        state, redirect = query.get("state", ""), query.get("redirect_uri")
        if scenario is None or query.get("client_id") != self.target_app_id:
            error = {"error": "invalid_request", "state": state, "error_description":
                     "AADSTS700016: Application not found in the directory." if scenario else
                     "AADSTS90002: Tenant not found."}
            if redirect:
                return 302, {"location": f"{redirect}?{urlencode(error)}"}, b""
            return 400, {"content-type": "text/plain; charset=utf-8"}, error["error_description"].encode()
        scenario.consent(self.consent_grants, by=f"{self.consent_admin}@{scenario.initial_domain}")
        if redirect:
            answer = {"tenant": scenario.tenant_id, "state": state, "admin_consent": "True"}
            return 302, {"location": f"{redirect}?{urlencode(answer)}"}, b""
        page = (f"Admin consent granted in {scenario.display_name} for the app's {len(self.consent_grants)} "
                "application permissions (simulated: nothing real).")
        return 200, {"content-type": "text/plain; charset=utf-8"}, page.encode()

    def _token(self, scenario: TenantScenario, form: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        client_id = form.get("client_id", "")
        if form.get("grant_type") != "client_credentials":
            return self._aadsts(70003, "unsupported_grant_type", "The app requested an unsupported grant type.")
        if client_id != self.client_id or not scenario.app_in_tenant:
            return self._aadsts(
                700016,
                "unauthorized_client",
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{scenario.display_name}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You may have sent your "
                "authentication request to the wrong tenant.",
            )
        if "client_assertion" in form:
            problem = self._check_assertion(scenario, form)
            if problem:
                return self._aadsts(700027, "invalid_client", problem, status=401)
        elif form.get("client_secret") != self.client_secret:
            return self._aadsts(
                7000215,
                "invalid_client",
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                f"secret value, not the client secret ID, for a secret added to app '{client_id}'.",
                status=401,
            )
        elif self.expired_secret:
            return self._aadsts(
                7000222,
                "invalid_client",
                f"The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to "
                "create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate "
                "credentials for added security: https://aka.ms/certCreds.",
                status=401,
            )
        if scenario.token_error is not None:
            return self._forced_token_error(scenario, client_id)
        scope = form.get("scope", "")
        service = next((s for s in ("graph", "exchange") if scope == f"{self.url(s)}/.default"), None)
        if service is None:
            return self._aadsts(
                500011,
                "invalid_resource",
                f"The resource principal named {scope.removesuffix('/.default')} was not found in the tenant "
                f"named {scenario.display_name}. This can happen if the application has not been installed by "
                "the administrator of the tenant or consented to by any user in the tenant.",
            )
        token = "fake." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (scenario.tenant_id, service)
        return (
            200,
            {},
            {
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "ext_expires_in": self.expires_in,
                "access_token": token,
            },
        )

    def _forced_token_error(self, scenario: TenantScenario, client_id: str) -> tuple[int, dict[str, str], Any]:
        code = scenario.token_error
        texts: dict[int, tuple[str, str, int]] = {
            7000229: (
                "invalid_client",
                f"The client application {client_id} is missing service principal in the tenant "
                f"{scenario.tenant_id}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119",
                401,
            ),
            65001: (
                "invalid_grant",
                f"The user or administrator has not consented to use the application with ID '{client_id}'. "
                "Send an interactive authorization request for this user and resource.",
                400,
            ),
            700016: ("unauthorized_client", f"Application with identifier '{client_id}' was not found.", 400),
            7000215: ("invalid_client", "Invalid client secret provided.", 401),
            7000222: ("invalid_client", f"The provided client secret keys for app '{client_id}' are expired.", 401),
            90002: ("invalid_tenant", f"Tenant '{scenario.tenant_id}' not found.", 400),
        }
        assert code is not None
        error, text, status = texts.get(code, ("invalid_request", "Forced error.", 400))
        return self._aadsts(code, error, text, status=status)

    def _check_assertion(self, scenario: TenantScenario, form: Mapping[str, str]) -> str | None:
        """Verify a private_key_jwt client assertion like Entra does (signature, x5t, aud, iss)."""
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return "Invalid client_assertion_type."
        assertion = form["client_assertion"]
        cert = self.tls.client_certificate
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return "Client assertion is not a valid JWT."
        x5t = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).decode().rstrip("=")
        x5t_s256 = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).decode().rstrip("=")
        # msal keeps base64 padding on x5t; compare without it.
        sent_x5t = str(header.get("x5t", "")).rstrip("=")
        sent_s256 = str(header.get("x5t#S256", "")).rstrip("=")
        if sent_x5t != x5t and sent_s256 != x5t_s256:
            return "Client assertion contains an invalid signature. [Reason - The key was not found.]"
        audiences = [f"{self.url('login')}/{t}/oauth2/v2.0/token" for t in (scenario.tenant_id, *scenario.domains)]
        try:
            claims = jwt.decode(
                assertion,
                cert.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=audiences,
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError as exc:
            return f"Client assertion failed signature validation. ({type(exc).__name__})"
        if claims.get("iss") != self.client_id or claims.get("sub") != self.client_id:
            return "The client assertion issuer does not match the client id."
        return None

    # -- Graph ---------------------------------------------------------------------------------------

    def _graph_http(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        raw: bytes,
        body: Any,
        request: Request,
        tenant_hint: list[str | None],
    ) -> tuple[int, dict[str, str], Any]:
        scenario = self._bearer(request, "graph")
        if scenario is None:
            return (
                401,
                {},
                _graph_error("InvalidAuthenticationToken", "Access token validation failure. Invalid audience."),
            )
        tenant_hint[0] = scenario.tenant_id
        if method == "POST" and path == "/v1.0/$batch":
            return self._graph_batch(scenario, body)
        return self._graph(scenario, method, path, query)

    def _graph_batch(self, scenario: TenantScenario, body: Any) -> tuple[int, dict[str, str], Any]:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return 400, {}, _graph_error("BadRequest", "Invalid batch payload format.")
        if len(requests) > 20:
            return 400, {}, _graph_error("BadRequest", "Unable to deserialize content. Limit of 20 requests exceeded.")
        ids = [str(r.get("id")) for r in requests]
        if len(set(ids)) != len(ids):
            return 400, {}, _graph_error("BadRequest", "Batch request contains duplicate Ids.")
        responses = []
        for sub in requests:
            url = urlsplit(str(sub.get("url", "")))
            path = "/v1.0" + (url.path if url.path.startswith("/") else "/" + url.path)
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            method = str(sub.get("method", "GET")).upper()
            fault = self._fault("graph", path, query, in_batch=True)
            if fault is not None:
                status, headers, payload = self._fault_response("graph", fault)
            else:
                status, headers, payload = self._graph(scenario, method, path, query)
            self._record(RecordedRequest("graph", method, path, query, True, scenario.tenant_id, status, {}, None))
            responses.append(
                {
                    "id": sub.get("id"),
                    "status": status,
                    "headers": {"Content-Type": "application/json", **headers},
                    "body": payload,
                }
            )
        # Graph documents that responses may come in any order: return them reversed to prove it.
        responses.reverse()
        return 200, {}, {"responses": responses}

    def _graph(
        self, scenario: TenantScenario, method: str, path: str, query: Mapping[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        if method != "GET":
            return 405, {}, _graph_error("Request_BadRequest", "Only GET is faked.")
        base = f"{self.url('graph')}/v1.0"
        ctx = f"{base}/$metadata#"
        rest = path.removeprefix("/v1.0")
        select = [s for s in query.get("$select", "").split(",") if s]
        flt = query.get("$filter")
        m = re.fullmatch(r"/servicePrincipals\(appId='([^']*)'\)", rest)
        if m:
            sp = self._service_principal(scenario, m.group(1))
            if sp is None:
                return (
                    404,
                    {},
                    _graph_error(
                        "Request_ResourceNotFound",
                        f"Resource '{m.group(1)}' does not exist or one of its queried reference-property objects "
                        "are not present.",
                    ),
                )
            return 200, {}, _entity(f"{ctx}servicePrincipals/$entity", sp, select)
        if rest == "/servicePrincipals":
            items = [sp for sp in self._all_service_principals(scenario)]
            return self._collection(f"{ctx}servicePrincipals", items, path, query, flt)
        m = re.fullmatch(r"/servicePrincipals/([0-9a-fA-F-]{36})", rest)
        if m:
            sp = next((s for s in self._all_service_principals(scenario) if s["id"] == m.group(1).lower()), None)
            if sp is None:
                return (
                    404,
                    {},
                    _graph_error(
                        "Request_ResourceNotFound",
                        f"Resource '{m.group(1)}' does not exist or one of its queried reference-property objects "
                        "are not present.",
                    ),
                )
            return 200, {}, _entity(f"{ctx}servicePrincipals/$entity", sp, select)
        m = re.fullmatch(r"/servicePrincipals/([0-9a-fA-F-]{36})/appRoleAssignments", rest)
        if m:
            if m.group(1).lower() != scenario.sp_id or not scenario.sp_exists:
                items = []
                if not any(s["id"] == m.group(1).lower() for s in self._all_service_principals(scenario)):
                    return (
                        404,
                        {},
                        _graph_error(
                            "Request_ResourceNotFound",
                            f"Resource '{m.group(1)}' does not exist or one of its "
                            "queried reference-property objects are not present.",
                        ),
                    )
            else:
                items = self._app_role_assignments(scenario)
            return self._collection(
                f"{ctx}servicePrincipals('{m.group(1)}')/appRoleAssignments", items, path, query, flt
            )
        # Alternate-key navigation (servicePrincipals(appId='…')/…) and the same paths by object id.
        m = re.fullmatch(
            r"/servicePrincipals(?:\(appId='([^']*)'\)|/([0-9a-fA-F-]{36}))"
            r"/(appRoleAssignments|memberOf/microsoft\.graph\.directoryRole)",
            rest,
        )
        if m and (m.group(1) is not None or m.group(3) != "appRoleAssignments"):
            app_id, object_id, segment = m.group(1), m.group(2), m.group(3)
            sp = (self._service_principal(scenario, app_id) if app_id is not None else
                  next((s for s in self._all_service_principals(scenario) if s["id"] == object_id.lower()), None))
            if sp is None:
                key = app_id if app_id is not None else object_id
                return (
                    404,
                    {},
                    _graph_error(
                        "Request_ResourceNotFound",
                        f"Resource '{key}' does not exist or one of its queried reference-property objects "
                        "are not present.",
                    ),
                )
            is_target = sp["id"] == scenario.sp_id
            if segment == "appRoleAssignments":
                items = self._app_role_assignments(scenario) if is_target else []
                return self._collection(
                    f"{ctx}servicePrincipals('{sp['id']}')/appRoleAssignments", items, path, query, flt
                )
            items = self._directory_roles(scenario) if is_target else []
            return self._collection(f"{ctx}directoryRoles", items, path, query, flt)
        if rest == "/applications":
            return self._applications(scenario, ctx, path, query, flt)
        if rest == "/oauth2PermissionGrants":
            return self._collection(f"{ctx}oauth2PermissionGrants", self._grants(scenario), path, query, flt)
        if rest == "/auditLogs/directoryAudits":
            return self._directory_audits(scenario, ctx, path, query, flt)
        if rest == "/roleManagement/directory/roleAssignments":
            expand = "roleDefinition" in query.get("$expand", "")
            items = self._role_assignments(scenario, expand)
            return self._collection(f"{ctx}roleManagement/directory/roleAssignments", items, path, query, flt)
        if rest == "/roleManagement/directory/roleAssignmentScheduleInstances":
            items = self._role_assignment_schedule_instances(scenario)
            return self._collection(f"{ctx}roleManagement/directory/roleAssignmentScheduleInstances", items, path,
                                    query, flt)
        if rest == "/roleManagement/directory/roleEligibilitySchedules":
            items = self._role_eligibility_schedules(scenario)
            return self._collection(f"{ctx}roleManagement/directory/roleEligibilitySchedules", items, path, query,
                                    flt)
        if rest == "/subscribedSkus":
            return self._collection(f"{ctx}subscribedSkus", self._skus(scenario), path, query, flt)
        if rest == "/organization":
            return self._collection(f"{ctx}organization", [self._organization(scenario)], path, query, flt)
        if rest == "/identity/conditionalAccess/policies":
            items = [dict(p) for p in scenario.ca_policies]
            return self._collection(f"{ctx}identity/conditionalAccess/policies", items, path, query, flt)
        if rest == "/policies/identitySecurityDefaultsEnforcementPolicy":
            return (
                200,
                {},
                _entity(
                    f"{ctx}policies/identitySecurityDefaultsEnforcementPolicy/$entity",
                    {
                        "id": SECURITY_DEFAULTS_POLICY_ID,
                        "displayName": "Security Defaults",
                        "description": "Security defaults is a set of basic identity security mechanisms recommended "
                        "by Microsoft. When enabled, these recommendations will be automatically enforced in your "
                        "organization. Administrators and users will be better protected from common identity "
                        "related attacks.",
                        "isEnabled": scenario.security_defaults,
                    },
                    select,
                ),
            )
        return (
            400,
            {},
            _graph_error(
                "BadRequest", f"Resource not found for the segment '{rest.strip('/').split('/')[0].split('(')[0]}'."
            ),
        )

    def _collection(
        self, context: str, items: list[dict[str, Any]], path: str, query: Mapping[str, str], flt: str | None
    ) -> tuple[int, dict[str, str], Any]:
        if flt:
            m = re.fullmatch(r"(\w+) eq '((?:[^']|'')*)'", flt.strip())
            if not m:
                return 400, {}, _graph_error("Request_UnsupportedQuery", "Unsupported or invalid query filter clause.")
            name, value = m.group(1), m.group(2).replace("''", "'")
            items = [i for i in items if str(i.get(name, "")).lower() == value.lower()]
        select = [s for s in query.get("$select", "").split(",") if s]
        items = [_select(i, select) for i in items]
        page: dict[str, Any] = {"@odata.context": context}
        if self.page_size:
            offset = int(query.get("$skiptoken", "0") or 0)
            chunk = items[offset : offset + self.page_size]
            if offset + self.page_size < len(items):
                rest = {k: v for k, v in query.items() if k != "$skiptoken"}
                rest["$skiptoken"] = str(offset + self.page_size)
                page["@odata.nextLink"] = f"{self.url('graph')}{path}?{urlencode(rest)}"
            items = chunk
        page["value"] = items
        return 200, {}, page

    def _applications(
        self, scenario: TenantScenario, ctx: str, path: str, query: Mapping[str, str], flt: str | None
    ) -> tuple[int, dict[str, str], Any]:
        """The checking app's registration in its home tenant (https://learn.microsoft.com/en-us/graph/api/
        application-list); without Application.Read.All, the 403 Graph documents for missing permissions
        (https://learn.microsoft.com/en-us/graph/errors: 403 Forbidden, code Authorization_RequestDenied)."""
        if not self.application_read_granted:
            return 403, {}, _graph_error("Authorization_RequestDenied",
                                         "Insufficient privileges to complete the operation.")
        items: list[dict[str, Any]] = []
        if scenario.tenant_id == self.home_tenant_id:
            items.append({
                "id": _object_id(scenario.tenant_id, "checking-app-registration"),
                "appId": self.client_id,
                "displayName": "itdr-bot readiness check",
                "signInAudience": "AzureADMultipleOrgs",
                "keyCredentials": list(self.key_credentials),
                "passwordCredentials": list(self.password_credentials),
            })
        return self._collection(f"{ctx}applications", items, path, query, flt)

    def _directory_audits(
        self, scenario: TenantScenario, ctx: str, path: str, query: Mapping[str, str], flt: str | None
    ) -> tuple[int, dict[str, str], Any]:
        """`activityDateTime ge …`, `activityDisplayName eq '…'`, `targetResources/any(t:t/id eq '…')`, joined by
        `and`, as Graph filters them (https://learn.microsoft.com/graph/api/directoryaudit-list)."""
        if scenario.audit_forbidden:
            return 403, {}, _graph_error("Authorization_RequestDenied",
                                         "Insufficient privileges to complete the operation.")
        items = list(scenario.audit_events)
        self.audit_queries.append(flt or "")
        for clause in re.split(r"\s+and\s+", (flt or "").strip()) if flt else []:
            since = re.fullmatch(r"activityDateTime ge (\S+)", clause)
            activity = re.fullmatch(r"activityDisplayName eq '((?:[^']|'')*)'", clause)
            target = re.fullmatch(r"targetResources/any\(t:\s*t/id eq '([^']*)'\)", clause)
            if since:
                bound = since.group(1)
                items = [i for i in items if i["activityDateTime"] >= bound]
            elif activity:
                name = activity.group(1).replace("''", "'")
                items = [i for i in items if i["activityDisplayName"] == name]
            elif target:
                items = [i for i in items if any(t["id"] == target.group(1) for t in i["targetResources"])]
            else:
                return 400, {}, _graph_error("Request_UnsupportedQuery", "Unsupported or invalid query filter clause.")
        return self._collection(f"{ctx}auditLogs/directoryAudits", list(reversed(items)), path, query, None)

    def _resource_sp(self, scenario: TenantScenario, app_id: str) -> dict[str, Any]:
        name, roles = RESOURCE_APPS[app_id]
        return {
            "id": scenario.resource_sp_id(app_id),
            "accountEnabled": True,
            "appDisplayName": name,
            "appId": app_id,
            "displayName": name,
            "servicePrincipalType": "Application",
            "servicePrincipalNames": [app_id],
            "appRoles": [
                {
                    "allowedMemberTypes": ["Application"],
                    "description": display,
                    "displayName": display,
                    "id": role_id,
                    "isEnabled": True,
                    "origin": "Application",
                    "value": value,
                }
                for value, role_id, display in roles
            ],
        }

    def _target_sp(self, scenario: TenantScenario) -> dict[str, Any]:
        return {
            "id": scenario.sp_id,
            "accountEnabled": scenario.sp_enabled,
            "appDisplayName": scenario.sp_display_name,
            "appId": self.target_app_id,
            "appOwnerOrganizationId": scenario.app_owner_tenant_id,
            "displayName": scenario.sp_display_name,
            "servicePrincipalType": "Application",
            "servicePrincipalNames": [self.target_app_id],
            "appRoles": [],
        }

    def _all_service_principals(self, scenario: TenantScenario) -> list[dict[str, Any]]:
        items = [self._resource_sp(scenario, app_id) for app_id in RESOURCE_APPS]
        if scenario.sp_exists:
            items.append(self._target_sp(scenario))
        return items

    def _service_principal(self, scenario: TenantScenario, app_id: str) -> dict[str, Any] | None:
        return next((s for s in self._all_service_principals(scenario) if s["appId"] == app_id.lower()), None)

    def _app_role_assignments(self, scenario: TenantScenario) -> list[dict[str, Any]]:
        return [
            {
                "id": _opaque_id(scenario.tenant_id, resource_app_id, role_id),
                "deletedDateTime": None,
                "appRoleId": role_id,
                "createdDateTime": "2024-05-02T04:22:45.4980259Z",
                "principalDisplayName": scenario.sp_display_name,
                "principalId": scenario.sp_id,
                "principalType": "ServicePrincipal",
                "resourceDisplayName": RESOURCE_APPS[resource_app_id][0],
                "resourceId": scenario.resource_sp_id(resource_app_id),
            }
            for resource_app_id, role_id in scenario.app_role_assignments
        ]

    def _grants(self, scenario: TenantScenario) -> list[dict[str, Any]]:
        grants = [
            {
                "clientId": scenario.sp_id,
                "consentType": "AllPrincipals",
                "id": _opaque_id(scenario.tenant_id, "grant", resource_app_id),
                "principalId": None,
                "resourceId": scenario.resource_sp_id(resource_app_id),
                "scope": scope,
            }
            for resource_app_id, scope in scenario.delegated_grants
        ]
        # Someone else's grant, so a missing clientId filter shows up in tests.
        grants.append(
            {
                "clientId": _object_id(scenario.tenant_id, "another-app"),
                "consentType": "AllPrincipals",
                "id": _opaque_id(scenario.tenant_id, "grant", "another-app"),
                "principalId": None,
                "resourceId": scenario.resource_sp_id(GRAPH_APP_ID),
                "scope": "User.Read",
            }
        )
        return grants

    def _directory_roles(self, scenario: TenantScenario) -> list[dict[str, Any]]:
        """The activated directoryRole objects the target app is a member of (memberOf, cast to directoryRole)."""
        return [
            {
                "@odata.type": "#microsoft.graph.directoryRole",
                "id": _object_id(scenario.tenant_id, f"directory-role-{template}"),
                "deletedDateTime": None,
                "description": None,
                "displayName": ENTRA_ROLES.get(template, "Custom role"),
                "roleTemplateId": template,
            }
            for template in scenario.held_roles()
        ]

    def _role_assignments(self, scenario: TenantScenario, expand: bool) -> list[dict[str, Any]]:
        """Active assignments, shaped as the sample of
        https://learn.microsoft.com/graph/api/rbacapplication-list-roleassignments (microsoft-apis.md 1.4)."""
        items = []
        holders = [(scenario.sp_id, t, "/") for t in scenario.held_roles()] if scenario.sp_exists else []
        if scenario.sp_exists:
            holders += [(scenario.sp_id, t, scope) for t, scope in scenario.scoped_roles.items()]
        # A Global Administrator held by someone else, so a missing principalId filter shows up.
        holders.append((_object_id(scenario.tenant_id, "admin-user"), "62e90394-69f5-4237-9190-012177145e10", "/"))
        for principal, template, scope in holders:
            item: dict[str, Any] = {
                "id": _opaque_id(principal, template, scope),
                "principalId": principal,
                "resourceScope": scope,
                "directoryScopeId": scope,
                "roleDefinitionId": template,
            }
            if expand:
                item["roleDefinition"] = {
                    "id": template,
                    "displayName": ENTRA_ROLES.get(template, "Custom role"),
                    "templateId": template,
                }
            items.append(item)
        return items

    def _role_assignment_schedule_instances(self, scenario: TenantScenario) -> list[dict[str, Any]]:
        """Active assignments, direct or through PIM, with their ends (null: permanent), shaped as the response
        sample of https://learn.microsoft.com/graph/api/rbacapplication-list-roleassignmentscheduleinstances
        (v1.0; the sample's time-less assignments have "startDateTime": null, "assignmentType": "Assigned")."""
        items = []
        for item in self._role_assignments(scenario, expand=False):
            template, principal = item["roleDefinitionId"], item["principalId"]
            own = principal == scenario.sp_id and item["directoryScopeId"] == "/"
            end = scenario.role_ends.get(template) if own else None
            start = None if end is None else end - dt.timedelta(days=30)
            items.append({
                "id": item["id"],
                "principalId": principal,
                "roleDefinitionId": template,
                "directoryScopeId": item["directoryScopeId"],
                "appScopeId": None,
                "startDateTime": None if start is None else start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "endDateTime": None if end is None else end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "assignmentType": "Assigned",
                "memberType": "Direct",
                "roleAssignmentOriginId": item["id"],
                "roleAssignmentScheduleId": item["id"],
            })
        return items

    def _role_eligibility_schedules(self, scenario: TenantScenario) -> list[dict[str, Any]]:
        """PIM eligibilities, shaped as the response sample of
        https://learn.microsoft.com/graph/api/rbacapplication-list-roleeligibilityschedules (v1.0)."""
        holders = [(scenario.sp_id, t) for t in scenario.eligible_roles] if scenario.sp_exists else []
        # Someone else's eligibility, so a missing principalId filter shows up.
        holders.append((_object_id(scenario.tenant_id, "admin-user"), "fe930be7-5e62-47db-91af-98c3a49a38b1"))
        return [
            {
                "@odata.type": "#microsoft.graph.unifiedRoleEligibilitySchedule",
                "id": str(uuid.uuid5(uuid.UUID(scenario.tenant_id), f"eligibility-{principal}-{template}")),
                "principalId": principal,
                "roleDefinitionId": template,
                "directoryScopeId": "/",
                "appScopeId": None,
                "createdUsing": str(uuid.uuid5(uuid.UUID(scenario.tenant_id), f"request-{principal}-{template}")),
                "createdDateTime": "2024-05-02T04:22:45.497Z",
                "modifiedDateTime": None,
                "status": "Provisioned",
                "memberType": "Direct",
                "scheduleInfo": {
                    "startDateTime": "2024-05-02T04:22:45.497Z",
                    "recurrence": None,
                    "expiration": {"type": "noExpiration", "endDateTime": None, "duration": None},
                },
            }
            for principal, template in holders
        ]

    def _skus(self, scenario: TenantScenario) -> list[dict[str, Any]]:
        plans = [PLAN_MCAS, PLAN_P1] + ([PLAN_P2] if scenario.p2_licence else [])
        return [
            {
                "accountName": scenario.display_name,
                "accountId": scenario.tenant_id,
                "appliesTo": "User",
                "capabilityStatus": "Enabled",
                "consumedUnits": 14,
                "id": f"{scenario.tenant_id}_{SKU_E5[0]}",
                "prepaidUnits": {"enabled": 25, "lockedOut": 0, "suspended": 0, "warning": 0},
                "servicePlans": [
                    {
                        "servicePlanId": pid,
                        "servicePlanName": pname,
                        "provisioningStatus": "Success",
                        "appliesTo": "User",
                    }
                    for pid, pname in plans
                ],
                "skuId": SKU_E5[0],
                "skuPartNumber": SKU_E5[1],
                "subscriptionIds": [],
            }
        ]

    def _organization(self, scenario: TenantScenario) -> dict[str, Any]:
        plans = (
            [
                {
                    "assignedDateTime": "2021-08-02T10:36:57Z",
                    "capabilityStatus": "Enabled",
                    "service": "exchange",
                    "servicePlanId": PLAN_EXCHANGE,
                }
            ]
            if scenario.exchange_licensed
            else []
        )
        plans.append(
            {
                "assignedDateTime": "2021-08-02T10:36:57Z",
                "capabilityStatus": "Enabled",
                "service": "AADPremiumService",
                "servicePlanId": PLAN_P1[0],
            }
        )
        if scenario.p2_licence:
            plans.append(
                {
                    "assignedDateTime": "2021-08-02T10:36:57Z",
                    "capabilityStatus": "Enabled",
                    "service": "AADPremiumService",
                    "servicePlanId": PLAN_P2[0],
                }
            )
        return {
            "id": scenario.tenant_id,
            "displayName": scenario.display_name,
            "tenantType": "AAD",
            "assignedPlans": plans,
            "verifiedDomains": [
                {
                    "capabilities": "Email, OfficeCommunicationsOnline",
                    "isDefault": i == 0,
                    "isInitial": d == scenario.initial_domain,
                    "name": d,
                    "type": "Managed",
                }
                for i, d in enumerate(scenario.domains)
            ],
        }

    # -- Exchange admin API -----------------------------------------------------------------------------

    def _exchange(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        raw: bytes,
        body: Any,
        request: Request,
        tenant_hint: list[str | None],
    ) -> tuple[int, dict[str, str], Any]:
        m = re.fullmatch(r"/adminapi/beta/([^/]+)/InvokeCommand", path)
        if method != "POST" or not m:
            return 404, {}, _exo_error("NotFound", f"No fake for {method} {path}")
        url_tenant = m.group(1)
        scenario = self._bearer(request, "exchange")
        if scenario is None or self._tenant(url_tenant) is not scenario:
            return 401, {}, _exo_error("Unauthorized", "Provide valid credential.")
        tenant_hint[0] = scenario.tenant_id
        if request.headers.get("x-anchormailbox", "").lower() != (EXO_ANCHOR + url_tenant).lower():
            # Fake-only strictness: EXO routes on this header, so a wrong one is a bug worth catching.
            return 400, {}, _exo_error("BadRequest", "X-AnchorMailbox header missing or does not match the tenant.")
        if not scenario.exchange_licensed:
            return 400, {}, _exo_error("BadRequest", "Request not applicable to target tenant.")  # status [est]
        cmdlet_input = body.get("CmdletInput") if isinstance(body, dict) else None
        if not isinstance(cmdlet_input, dict) or "CmdletName" not in cmdlet_input:
            return 400, {}, _exo_error("BadRequest", "The request body is missing CmdletInput.CmdletName.")
        name = str(cmdlet_input["CmdletName"])
        params = cmdlet_input.get("Parameters") or {}
        output = self._cmdlet(scenario, name, params)
        if isinstance(output, str):
            return 400, {}, _exo_error("BadRequest", output)  # status [est]
        select = [s for s in query.get("$select", "").split(",") if s]
        if select:
            wanted = {s.lower() for s in select}
            output = [{k: v for k, v in o.items() if k.lower() in wanted} for o in output]
        exo = f"{self.url('exchange')}/adminapi/beta/{url_tenant}"
        page: dict[str, Any] = {
            "@odata.context": f"{exo}/$metadata#Collection(Exchange.GenericHashTable)",
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": [],
        }
        if self.page_size:
            offset = int(query.get("$skiptoken", "0") or 0)
            if offset + self.page_size < len(output):
                rest = {k: v for k, v in query.items() if k != "$skiptoken"}
                rest["$skiptoken"] = str(offset + self.page_size)
                page["@odata.nextLink"] = f"{exo}/InvokeCommand?{urlencode(rest)}"
            output = output[offset : offset + self.page_size]
        page["value"] = output
        headers = {
            "Rate-Limit-Limit": "30000",
            "Rate-Limit-Remaining": "29997",
            "Rate-Limit-Reset": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat(),
            "X-Concurrencycount": "0",
        }
        return 200, headers, page

    def _cmdlet(self, scenario: TenantScenario, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]] | str:
        if name == "Get-AdminAuditLogConfig":
            return [
                {
                    "AdminAuditLogEnabled": True,
                    "UnifiedAuditLogIngestionEnabled": scenario.audit_log_ingestion,
                    "UnifiedAuditLogFirstOptInDate": "2020-01-01T00:00:00Z" if scenario.audit_log_ingestion else None,
                    "AdminAuditLogCmdlets": ["*"],
                    "AdminAuditLogParameters": ["*"],
                    "AdminAuditLogAgeLimit": "90.00:00:00",
                    "LogLevel": "None",
                    "TestCmdletLoggingEnabled": False,
                    "Name": "Admin Audit Log Settings",
                    "Identity": "Admin Audit Log Settings",
                    "IsValid": True,
                    "ObjectState": "Unchanged",
                }
            ]
        if name == "Get-OrganizationConfig":
            return [
                {
                    "Name": scenario.initial_domain.split(".")[0],
                    "DisplayName": scenario.display_name,
                    "Identity": scenario.initial_domain,
                    "IsDehydrated": scenario.dehydrated,
                    "AuditDisabled": False,
                    "IsValid": True,
                    "ObjectState": "Unchanged",
                }
            ]
        if name == "Get-ManagementRoleAssignment":
            rows: list[dict[str, Any]] = []
            for role in scenario.org_management_roles:
                for kind in ("Regular", "DelegatingOrgWide"):
                    suffix = "" if kind == "Regular" else "-Delegating"
                    rows.append(
                        {
                            "Name": f"{role}-Organization Management{suffix}",
                            "Identity": f"{role}-Organization Management{suffix}",
                            "Role": role,
                            "RoleAssigneeName": "Organization Management",
                            "RoleAssigneeType": "RoleGroup",
                            "RoleAssignmentDelegationType": kind,
                            "Enabled": True,
                        }
                    )
            rows.append(
                {
                    "Name": "Mail Recipients-Recipient Management",
                    "Identity": "Mail Recipients-Recipient Management",
                    "Role": "Mail Recipients",
                    "RoleAssigneeName": "Recipient Management",
                    "RoleAssigneeType": "RoleGroup",
                    "RoleAssignmentDelegationType": "Regular",
                    "Enabled": True,
                }
            )
            if params.get("Delegating") is False:
                rows = [r for r in rows if r["RoleAssignmentDelegationType"] == "Regular"]
            elif params.get("Delegating") is True:
                rows = [r for r in rows if r["RoleAssignmentDelegationType"] != "Regular"]
            if "RoleAssignee" in params:
                rows = [r for r in rows if r["RoleAssigneeName"].lower() == str(params["RoleAssignee"]).lower()]
            return rows
        if name == "Get-RoleGroup":
            groups = [
                {"Name": "Organization Management", "Roles": list(scenario.org_management_roles)},
                {"Name": "Recipient Management", "Roles": ["Mail Recipients"]},
            ]
            groups_shown: list[dict[str, Any]] = [
                {**g, "DisplayName": g["Name"], "Identity": g["Name"], "RoleGroupType": "Standard", "Members": []}
                for g in groups
            ]
            rows = groups_shown
            identity = params.get("Identity")
            if identity is not None:
                rows = [r for r in rows if r["Name"].lower() == str(identity).lower()]
                if not rows:
                    return (
                        f"The operation couldn't be performed because object '{identity}' couldn't be found on "
                        f"'{scenario.initial_domain}'."
                    )
            return rows
        return (
            f"The term '{name}' is not recognized as a name of a cmdlet, function, script file, or executable "
            "program. Check the spelling of the name, or if a path was included, verify that the path is "
            "correct and try again."
        )


def password_credential(secret: str, end: dt.datetime, *, display_name: str = "itdr-bot") -> dict[str, Any]:
    """A passwordCredential as Graph lists it: the documented sample of
    https://learn.microsoft.com/en-us/graph/api/resources/passwordcredential (JSON representation), with
    `secretText` null (Graph returns it only when the secret is created) and `hint` its first 3 characters."""
    start = end - dt.timedelta(days=365)
    return {
        "customKeyIdentifier": None,
        "displayName": display_name,
        "endDateTime": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "hint": secret[:3],
        "keyId": str(uuid.uuid4()),
        "secretText": None,
        "startDateTime": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def _graph_error(code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": _now(), "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())},
        }
    }


def _exo_error(code: str, message: str) -> dict[str, Any]:
    """Shape parsed by EXO V3 / CIPP: error.details[].message and error.innererror.internalException."""
    return {
        "error": {
            "code": code,
            "message": "An error has occurred.",
            "details": [{"code": "Context", "target": "", "message": message}],
            "innererror": {
                "message": message,
                "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                "internalException": {
                    "message": message,
                    "type": "System.Management.Automation.CmdletInvocationException",
                },
            },
        }
    }


def _select(item: Mapping[str, Any], select: list[str]) -> dict[str, Any]:
    if not select:
        return dict(item)
    return {k: v for k, v in item.items() if k in select or k.startswith("@odata")}


def _entity(context: str, item: Mapping[str, Any], select: list[str]) -> dict[str, Any]:
    return {"@odata.context": context, **_select(item, select)}


# --- A CONNECT proxy, to prove HTTPS_PROXY is honoured ---------------------------------------------


class ConnectProxy:
    """Minimal HTTP CONNECT proxy on 127.0.0.1 that records the tunnels it opened."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-proxy", daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                await writer.drain()
                return
            host, port = target.rsplit(":", 1)
            self.tunnels.append(target)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self._writers.update((writer, up_writer))
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(Exception):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                with contextlib.suppress(Exception):
                    dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except Exception:
            with contextlib.suppress(Exception):
                writer.close()


# --- Test helpers --------------------------------------------------------------------------------------


def app_permission_grants(catalog: Catalog, version: str, *, without: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The application permissions of a revision (CPV-only ones aside, as a direct customer grants them), as
    (resource appId, appRoleId): what admin consent to the ITDR app grants."""
    return [(i.ids.resource_app_id, i.ids.application_id) for i in catalog.items_at(version)
            if i.kind is Kind.application_permission and not i.cpv_only and i.name not in without
            and i.ids.resource_app_id and i.ids.application_id]


def granting(catalog: Catalog, version: str, tenant_id: str, *, domains: list[str], display_name: str = "Contoso",
             without: tuple[str, ...] = ()) -> TenantScenario:
    """A tenant granting the ITDR app every application permission and directory role of `version` (CPV-only ones
    aside), except `without`."""
    return TenantScenario(
        tenant_id, domains=domains, display_name=display_name,
        app_role_assignments=app_permission_grants(catalog, version, without=without),
        directory_roles=[i.ids.template_id for i in catalog.items_at(version)
                         if i.kind is Kind.directory_role and not i.cpv_only and i.name not in without
                         and i.ids.template_id])


@contextlib.contextmanager
def running_fake(**kwargs: Any) -> Iterator[FakeMicrosoft]:
    """A started fake with SSL_CERT_FILE/REQUESTS_CA_BUNDLE pointing at its CA for the duration."""
    with FakeMicrosoft(**kwargs) as fake, fake.trust_env():
        yield fake


class SleepRecorder:
    """Injectable replacement for asyncio.sleep that records delays instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
