"""Pydantic models of the permission catalog. Loaded once from `catalog/data/*.yaml` and validated there."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field


class Api(StrEnum):
    graph = "graph"
    exchange = "exchange"
    o365_management = "o365_management"
    partner_center = "partner_center"
    entra_role = "entra_role"
    exchange_role_group = "exchange_role_group"


class ApiLabels(NamedTuple):
    title: str  # the API as Microsoft names it
    items: str  # its items as a group, as a report lists them


API_LABELS: dict[Api, ApiLabels] = {
    Api.graph: ApiLabels("Microsoft Graph", "Microsoft Graph permissions"),
    Api.exchange: ApiLabels("Office 365 Exchange Online", "Exchange Online permissions"),
    Api.o365_management: ApiLabels("Office 365 Management APIs", "Office 365 Management API permissions"),
    Api.partner_center: ApiLabels("Microsoft Partner Center", "Partner Center permissions"),
    Api.entra_role: ApiLabels("Microsoft Entra ID", "Entra directory roles"),
    Api.exchange_role_group: ApiLabels("Exchange Online (Organization Management role group)",
                                       "Organization Management roles"),
}


class Kind(StrEnum):
    application_permission = "application_permission"
    delegated_permission = "delegated_permission"
    directory_role = "directory_role"
    role_group_role = "role_group_role"


KIND_TITLES: dict[Kind, str] = {
    Kind.application_permission: "application permission",
    Kind.delegated_permission: "delegated permission",
    Kind.directory_role: "directory role",
    Kind.role_group_role: "management role",
}


class Status(StrEnum):
    active = "active"
    future = "future"
    removed = "removed"


# What users read for a status, in Slack and in the terminal alike.
STATUS_LABELS: dict[Status, str] = {
    Status.active: "Active",
    Status.future: "Future use (not required yet)",
    Status.removed: "Removed",
}


class Privilege(StrEnum):
    read = "read"
    write = "write"
    privileged = "privileged"


PRIVILEGE_LABELS: dict[Privilege, str] = {
    Privilege.read: "read-only",
    Privilege.write: "read/write",
    Privilege.privileged: "privileged",
}

# The kinds of discrepancy `discrepancies.yaml` may record, with what users read for each (a kind missing here
# fails the catalog's load).
DISCREPANCY_LABELS: dict[str, str] = {
    "name_mismatch": "Name mismatch",
    "typo": "Typo",
    "missing_new_marker": "Missing NEW! marker",
    "shared_row": "Shared row",
    "ambiguous_marker": "Ambiguous marker",
    "wording": "Misleading wording",
}


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Ids(Frozen):
    resource_app_id: str | None = None
    application_id: str | None = None
    delegated_id: str | None = None
    template_id: str | None = None
    management_role_name: str | None = None


class MicrosoftMeaning(Frozen):
    display_name: str | None = None
    description: str | None = None
    description_applies_to: str | None = None
    privileged_label: bool | None = None
    note: str | None = None
    sources: tuple[str, ...] = ()


class Impact(Frozen):
    capability: str
    capability_title: str
    capability_summary: str
    privilege: Privilege

    @property
    def privilege_label(self) -> str:
        return PRIVILEGE_LABELS[self.privilege]


class Discrepancy(Frozen):
    id: str
    kind: str
    message: str
    document_text: str

    @property
    def label(self) -> str:
        return DISCREPANCY_LABELS[self.kind]


class Item(Frozen):
    name: str
    api: Api
    kind: Kind
    row: str | None
    purpose: str | None
    new_marker: bool
    status: Status
    cpv_only: bool
    p2_only: bool
    huntress_adds: str | None = None
    introduced_in: str
    introduced_basis: str  # "revision" (named by a revision) or "inferred" (dated to the initial release)
    removed_in: str | None = None
    aliases: tuple[str, ...] = ()
    ids: Ids
    microsoft: MicrosoftMeaning
    impact: Impact
    discrepancies: tuple[Discrepancy, ...] = ()

    @property
    def api_title(self) -> str:
        return API_LABELS[self.api].title

    @property
    def kind_title(self) -> str:
        return KIND_TITLES[self.kind]

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    @property
    def is_permission(self) -> bool:
        return self.kind in (Kind.application_permission, Kind.delegated_permission)

    def to_json(self) -> dict[str, Any]:
        """The machine-readable shape shared by `itdr why --json`, search results and diffs."""
        return {
            "name": self.name,
            "api": self.api.value,
            "api_title": self.api_title,
            "kind": self.kind.value,
            "purpose": self.purpose,
            "status": self.status.value,
            "cpv_only": self.cpv_only,
            "p2_only": self.p2_only,
            "introduced_in": self.introduced_in,
            "introduced_basis": self.introduced_basis,
            "removed_in": self.removed_in,
            "new_marker": self.new_marker,
            "document_row": self.row,
            "huntress_adds": self.huntress_adds,
            "ids": self.ids.model_dump(exclude_none=True),
            "microsoft": self.microsoft.model_dump(exclude_none=True, exclude={"sources"})
            | {"sources": list(self.microsoft.sources)},
            "impact": self.impact.model_dump(mode="json"),
            "discrepancies": [d.model_dump() for d in self.discrepancies],
        }


class Revision(Frozen):
    version: str
    date: date
    document_date: str
    title: str
    added: tuple[str, ...]  # catalog names (a revision's own spelling is resolved through document_names)
    removed: tuple[str, ...]
    added_as_written: tuple[str, ...]
    added_basis: str = "document"  # "inferred" for v1, whose list the document does not give
    notes: tuple[str, ...] = ()

    @property
    def number(self) -> int:
        return int(self.version[1:])

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "date": self.date.isoformat(),
            "title": self.title,
            "added": list(self.added),
            "removed": list(self.removed),
            "added_basis": self.added_basis,
            "notes": list(self.notes),
        }


class Diff(Frozen):
    from_version: str
    to_version: str
    added: tuple[Item, ...] = Field(default=())
    removed: tuple[Item, ...] = Field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.from_version,
            "to": self.to_version,
            "added": [item.to_json() for item in self.added],
            "removed": [item.to_json() for item in self.removed],
        }


class Lookup(Frozen):
    query: str
    item: Item | None
    suggestions: tuple[Item, ...] = ()
    matched_alias: str | None = None
