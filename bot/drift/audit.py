"""Who revoked it, and when: Entra's directory audit for the ITDR app's service principal since the last snapshot.

`GET /auditLogs/directoryAudits?$filter=activityDateTime ge {since} and targetResources/any(t:t/id eq '{sp}')`
(AuditLog.Read.All, which the ITDR app holds). Only changes that take something away are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.microsoft import MicrosoftClients
from bot.microsoft.errors import MicrosoftError
from bot.microsoft.graph import odata_string
from bot.microsoft.http import Priority

#: Activities (Microsoft's activityDisplayName) that remove something from the app.
REVOKING = ("Remove app role assignment from service principal", "Remove member from role",
            "Remove eligible member from role", "Remove delegated permission grant", "Remove service principal",
            "Disable service principal", "Remove app role assignment")
MAX_EVENTS = 20


@dataclass(frozen=True)
class AuditEvent:
    activity: str
    actor: str  # a user principal name, or an app's display name
    at: datetime
    detail: str  # what the entry says was removed (a permission or role name), when it says

    def mentions(self, name: str) -> bool:
        return name.lower() in self.detail.lower()


@dataclass(frozen=True)
class Revocations:
    events: tuple[AuditEvent, ...] = ()
    error: str | None = None  # why the audit could not be read (the notification still goes out)


def _actor(raw: dict[str, Any]) -> str:
    initiated = raw.get("initiatedBy") or {}
    user = initiated.get("user") or {}
    app = initiated.get("app") or {}
    return str(user.get("userPrincipalName") or user.get("displayName") or app.get("displayName")
               or app.get("servicePrincipalName") or "unknown")


def _detail(raw: dict[str, Any]) -> str:
    values: list[str] = []
    for target in raw.get("targetResources") or []:
        if target.get("displayName"):
            values.append(str(target["displayName"]))
        for prop in target.get("modifiedProperties") or []:
            for side in ("oldValue", "newValue"):
                if prop.get(side):
                    values.append(f"{prop.get('displayName')}: {prop[side]}")
    return "; ".join(values)[:1000]


async def revocations(clients: MicrosoftClients, tenant_id: str, app_object_id: str, since: datetime) -> Revocations:
    """Revoking activities on the app's service principal since `since`, newest first."""
    stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = (f"/auditLogs/directoryAudits?$filter=activityDateTime ge {stamp} and "
            f"targetResources/any(t:t/id eq {odata_string(app_object_id)})&$top=50")
    try:
        raw = await clients.graph(tenant_id, priority=Priority.LOW).get_all(path)
    except MicrosoftError as exc:
        return Revocations(error=exc.message)
    events = [
        AuditEvent(activity=str(item.get("activityDisplayName") or ""), actor=_actor(item),
                   at=datetime.fromisoformat(str(item["activityDateTime"]).replace("Z", "+00:00")),
                   detail=_detail(item))
        for item in raw
        if str(item.get("activityDisplayName") or "").startswith(REVOKING) and item.get("activityDateTime")
    ]
    events.sort(key=lambda event: event.at, reverse=True)
    return Revocations(events=tuple(events[:MAX_EVENTS]))
