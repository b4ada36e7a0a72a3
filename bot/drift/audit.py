"""Who revoked it, and when: Entra's directory audit of what the ITDR app lost since the last snapshot.

Entra does not log every removal on the app's own service principal (shapes and sources:
../shared/reference/entra-audit-and-ops.md §1, Microsoft Learn "directoryAudit resource type"
https://learn.microsoft.com/graph/api/resources/directoryaudit and "Microsoft Entra audit log categories and
activities" https://learn.microsoft.com/entra/identity/monitoring-health/reference-audit-activities):

- "Remove app role assignment from service principal" (an application permission): the only target is the
  *resource* service principal (e.g. Microsoft Graph); the client is in `ServicePrincipal.ObjectID` (old value on
  removal), the permission in `AppRole.Value`. So it is read by activity name and matched on that property.
- "Remove delegated permission grant": the resource service principal as target, the scopes in
  `DelegatedPermissionGrant.Scope`, the client in `ServicePrincipal.ObjectID` or as a second target.
- "Remove member from role", "Remove eligible member from role" (and PIM's variants): the app's service principal
  is the target, the role in `Role.DisplayName` / `Role.TemplateId`.
- "Update service principal" with `AccountEnabled` `[true]` → `[false]`: the app disabled.
- "Remove service principal" / "Hard delete service principal": the app deleted (matched by id, or by the app's
  appId in its properties once the id is no longer known).

Listing the audit needs AuditLog.Read.All and Directory.Read.All (application); Entra keeps it 7 days without
Entra ID P1/P2 and 30 days with ("Microsoft Entra data retention").
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.microsoft import MicrosoftClients
from bot.microsoft.errors import Forbidden, MicrosoftError
from bot.microsoft.graph import odata_string
from bot.microsoft.http import Priority
from bot.microsoft.tenant import is_guid

APP_ROLE_REMOVED = "Remove app role assignment from service principal"
GRANT_REMOVED = "Remove delegated permission grant"
SP_UPDATED = "Update service principal"
SP_REMOVED = ("Remove service principal", "Hard delete service principal")
ROLE_REMOVED = ("Remove member from role", "Remove eligible member from role")
#: Read by activity: the ITDR app is not their target.
BY_ACTIVITY = (APP_ROLE_REMOVED, GRANT_REMOVED)
MAX_EVENTS = 20
PAGE = 100
#: How long Entra keeps the directory audit: without Entra ID P1/P2, and with it.
RETENTION_FREE = timedelta(days=7)
RETENTION_PREMIUM = timedelta(days=30)
#: Property names that carry what was removed, by activity family.
_APP_ROLE_NAMES = ("AppRole.Value",)
_GRANT_NAMES = ("DelegatedPermissionGrant.Scope",)
_ROLE_NAMES = ("Role.DisplayName", "Role.TemplateId")
_CLIENT_IDS = ("ServicePrincipal.ObjectID",)
_APP_IDS = ("AppPrincipalId", "AppId", "ServicePrincipal.AppId")


@dataclass(frozen=True)
class AuditEvent:
    activity: str
    actor: str  # a user principal name, or an app's display name
    at: datetime
    detail: str  # what the entry says was removed: permission values, scopes or role names, ", "-joined

    @property
    def names(self) -> frozenset[str]:
        return frozenset(part.strip().lower() for part in self.detail.split(",") if part.strip())

    def mentions(self, name: str) -> bool:
        """Whether the entry removed `name` (a permission, scope or role, exactly, ignoring case)."""
        return name.lower() in self.names

    def to_json(self) -> dict[str, str]:
        return {"activity": self.activity, "actor": self.actor, "at": self.at.isoformat(), "detail": self.detail}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> AuditEvent:
        return cls(activity=data["activity"], actor=data["actor"], at=datetime.fromisoformat(data["at"]),
                   detail=data["detail"])


@dataclass(frozen=True)
class Revocations:
    events: tuple[AuditEvent, ...] = ()
    error: str | None = None  # why the audit could not be read (the notification still goes out)
    since: datetime | None = None  # the start of the window searched
    beyond_retention: bool = False  # the window starts before the audit's retention: the entry may be gone

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error, "events": [event.to_json() for event in self.events],
                "since": self.since.isoformat() if self.since else None, "beyond_retention": self.beyond_retention}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Revocations:
        since = data.get("since")
        return cls(events=tuple(AuditEvent.from_json(e) for e in data.get("events") or ()), error=data.get("error"),
                   since=datetime.fromisoformat(since) if since else None,
                   beyond_retention=bool(data.get("beyond_retention")))


def _actor(raw: dict[str, Any]) -> str:
    initiated = raw.get("initiatedBy") or {}
    user = initiated.get("user") or {}
    app = initiated.get("app") or {}
    return str(user.get("userPrincipalName") or user.get("displayName") or app.get("displayName")
               or app.get("servicePrincipalName") or "unknown")


def _values(raw: object) -> list[str]:
    """A modifiedProperty's value: a JSON-encoded string ("\\"Mail.ReadWrite\\"", "[true]"), or plain text."""
    if raw is None or raw == "":
        return []
    try:
        decoded = json.loads(str(raw))
    except ValueError:
        decoded = raw
    items = decoded if isinstance(decoded, list) else [decoded]
    return [str(item).strip() for item in items if item is not None and str(item).strip()]


@dataclass
class _Entry:
    """One audit entry's targets and properties, read once."""

    raw: dict[str, Any]
    target_ids: list[str] = field(default_factory=list)  # in order: the first is the entry's main target
    old: dict[str, list[str]] = field(default_factory=dict)
    new: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, raw: dict[str, Any]) -> _Entry:
        entry = cls(raw)
        for target in raw.get("targetResources") or []:
            if target.get("id"):
                entry.target_ids.append(str(target["id"]).lower())
            for prop in target.get("modifiedProperties") or []:
                name = str(prop.get("displayName") or "")
                entry.old.setdefault(name, []).extend(_values(prop.get("oldValue")))
                entry.new.setdefault(name, []).extend(_values(prop.get("newValue")))
        return entry

    @property
    def activity(self) -> str:
        return str(self.raw.get("activityDisplayName") or "")

    def either(self, names: tuple[str, ...]) -> list[str]:
        """Values of these properties: the old value (a removal's), else the new one."""
        found: list[str] = []
        for name in names:
            found += self.old.get(name) or self.new.get(name) or []
        return found

    def about(self, sp_id: str | None, app_id: str | None) -> bool:
        """Whether the entry is about the ITDR app: as the client of a removed grant (the resource is the main
        target there, and may be anyone's), else as the target."""
        ids = {value.lower() for value in self.either(_CLIENT_IDS)}
        if self.activity == GRANT_REMOVED:
            ids.update(self.target_ids[1:])
        elif self.activity != APP_ROLE_REMOVED:
            ids.update(self.target_ids)
        if sp_id and sp_id.lower() in ids:
            return True
        return app_id is not None and app_id.lower() in {value.lower() for value in self.either(_APP_IDS)}

    def removed(self) -> str | None:
        """What this entry took from the app, or None when it took nothing (e.g. an update that kept it enabled)."""
        activity = self.activity
        if activity == APP_ROLE_REMOVED:
            return ", ".join(self.either(_APP_ROLE_NAMES)) or "an application permission"
        if activity == GRANT_REMOVED:
            scopes = [scope for value in self.either(_GRANT_NAMES) for scope in value.split()]
            return ", ".join(scopes) or "a delegated grant"
        if activity.startswith(ROLE_REMOVED):
            # PIM's entries may name the role as a target of type Role instead of in the properties [est: the role
            # and the member sit at different target indexes in PIM's entries, per public Sentinel PIM parsers].
            targets = self.raw.get("targetResources") or []
            roles = self.either(_ROLE_NAMES) or [str(t["displayName"]) for t in targets
                                                 if t.get("type") == "Role" and t.get("displayName")]
            return ", ".join(roles) or "a directory role"
        if activity == SP_UPDATED:
            before = [v.lower() for v in self.old.get("AccountEnabled", [])]
            after = [v.lower() for v in self.new.get("AccountEnabled", [])]
            return "disabled" if "true" in before and "false" in after else None
        if activity in SP_REMOVED:
            return "deleted"
        return None

    def event(self) -> AuditEvent | None:
        detail = self.removed()
        stamp = self.raw.get("activityDateTime")
        if detail is None or not stamp or str(self.raw.get("result") or "success").lower() != "success":
            return None
        return AuditEvent(activity=self.activity, actor=_actor(self.raw),
                          at=datetime.fromisoformat(str(stamp).replace("Z", "+00:00")), detail=detail[:1000])


def _filters(stamp: str, sp_id: str | None) -> list[str]:
    """One `$filter` per query: the activities whose target is someone else, by name; the rest by target."""
    since = f"activityDateTime ge {stamp}"
    filters = [f"{since} and activityDisplayName eq {odata_string(activity)}" for activity in BY_ACTIVITY]
    if sp_id is not None:
        filters.append(f"{since} and targetResources/any(t:t/id eq {odata_string(sp_id)})")
    else:  # the service principal is gone, and its id with it: its deletion is found by the app's appId
        filters += [f"{since} and activityDisplayName eq {odata_string(activity)}" for activity in SP_REMOVED]
    return filters


def _why(exc: MicrosoftError) -> str:
    if isinstance(exc, Forbidden):
        return ("no AuditLog.Read.All: the checking app needs AuditLog.Read.All and Directory.Read.All in this "
                "tenant to list the directory audit")
    return exc.message


async def revocations(clients: MicrosoftClients, tenant_id: str, app_object_id: str | None, since: datetime, *,
                      now: datetime, app_id: str | None = None) -> Revocations:
    """Removals from the ITDR app (its service principal `app_object_id`, or the app `app_id` once that is gone)
    since `since`, newest first."""
    sp_id = app_object_id if app_object_id and is_guid(app_object_id) else None
    app = app_id if app_id and is_guid(app_id) else None
    window = Revocations(since=since, beyond_retention=now - since > RETENTION_FREE)
    if sp_id is None and app is None:
        return Revocations(error="the ITDR app's service principal is not known, so its audit cannot be looked up",
                           since=since)
    start = max(since, now - RETENTION_PREMIUM)  # Entra holds nothing older
    stamp = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    graph = clients.graph(tenant_id, priority=Priority.LOW)
    try:
        pages = await asyncio.gather(*(graph.get_all(f"/auditLogs/directoryAudits?$filter={flt}&$top={PAGE}")
                                       for flt in _filters(stamp, sp_id)))
    except MicrosoftError as exc:
        return Revocations(error=_why(exc), since=since)
    seen: set[str] = set()
    events: list[AuditEvent] = []
    for raw in (item for page in pages for item in page):
        key = str(raw.get("id") or id(raw))
        if key in seen:
            continue
        seen.add(key)
        entry = _Entry.read(raw)
        event = entry.event() if entry.about(sp_id, app) else None
        if event is not None:
            events.append(event)
    events.sort(key=lambda event: event.at, reverse=True)
    return Revocations(events=tuple(events[:MAX_EVENTS]), since=window.since,
                       beyond_retention=window.beyond_retention)
