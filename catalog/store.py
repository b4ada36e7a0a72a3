"""Loading the catalog's data files and the pure logic over them: lookup, fuzzy match, search, replay, diff."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from rapidfuzz import fuzz, process

from catalog.models import (
    DISCREPANCY_LABELS,
    Api,
    Diff,
    Discrepancy,
    Ids,
    Impact,
    Item,
    Kind,
    Lookup,
    MicrosoftMeaning,
    Privilege,
    Revision,
    Status,
)

DATA_DIR = Path(__file__).parent / "data"

# A suggestion must be at least this similar (0-100) to be offered for a typo.
SUGGESTION_CUTOFF = 60.0
MAX_SUGGESTIONS = 5


class CatalogError(ValueError):
    """The data files are inconsistent: raised at load, never at answer time."""


class UnknownVersion(ValueError):
    """A revision the document does not have; the message is meant for the user."""


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: several times faster


def _read(name: str) -> Any:
    with (DATA_DIR / name).open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_Loader)


def normalize(text: str) -> str:
    """What a user typed, in the form the catalog matches: NFKC (full-width `Ｍａｉｌ．Ｒｅａｄ` reads as `Mail.Read`,
    ligatures and compatibility forms as their plain letters) without zero-width and other format characters
    (category Cf: zero-width spaces and joiners, bidi overrides, soft hyphens)."""
    text = unicodedata.normalize("NFKC", text)
    if text.isprintable():  # fast path: nothing invisible in it
        return text
    return "".join(char for char in text if unicodedata.category(char) != "Cf")


def _words(text: str) -> list[str]:
    """Lower-case words of a name or sentence; CamelCase and dotted names split into their parts."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", text)
    return re.findall(r"[a-z0-9]+", spaced.lower())


def _compact(text: str) -> str:
    """Punctuation-, space- and case-insensitive form: 'mail readwrite' and 'Mail.ReadWrite' agree."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


# Abbreviations people type for role names.
_EXPANSIONS = {"admin": "administrator", "admins": "administrator", "ca": "conditional access", "org": "organization"}


def _expand(query: str) -> str:
    return " ".join(_EXPANSIONS.get(word, word) for word in query.lower().split())


class Catalog:
    """The whole catalog: every item of the vendor's document, its revisions, and the logic over them."""

    def __init__(self, items: list[Item], revisions: list[Revision], resources: dict[Api, dict[str, str]]):
        self.items = items
        self.revisions = revisions
        self.resources = resources
        self._by_key: dict[str, Item] = {}
        self._alias_of: dict[str, str] = {}
        for item in items:
            for name in (item.name, *item.aliases):
                key = _compact(name)
                if key in self._by_key and self._by_key[key] is not item:
                    raise CatalogError(f"two items answer to {name!r}")
                self._by_key[key] = item
                if name != item.name:
                    self._alias_of[key] = name
        self._choices = {name: item for item in items for name in (item.name, *item.aliases)}
        # Every name and alias in the two forms `suggest` scores, prepared once instead of on every typo.
        self._choice_items = list(self._choices.values())
        self._choices_lower = [name.lower() for name in self._choices]
        self._choices_compact = [_compact(name) for name in self._choices]
        self._search_fields = {item.name: _search_fields(item) for item in items}
        self._membership = self._replay()

    # --- lookup ---------------------------------------------------------------------------------

    @property
    def current_items(self) -> list[Item]:
        """The 95 items of the document's current table (no removed ones)."""
        return [item for item in self.items if item.status is not Status.removed]

    def get(self, name: str) -> Item | None:
        return self._by_key.get(_compact(normalize(name)))

    def lookup(self, query: str) -> Lookup:
        """Exact (case-, punctuation- and width-insensitive) match, else up to five suggestions for a typo."""
        query = " ".join(normalize(query).split())
        key = _compact(query)
        if not key:
            return Lookup(query=query, item=None)
        if item := self._by_key.get(key) or self._by_key.get(_compact(_expand(query))):
            return Lookup(query=query, item=item, matched_alias=self._alias_of.get(key))
        return Lookup(query=query, item=None, suggestions=tuple(self.suggest(query)))

    def suggest(self, query: str, limit: int = MAX_SUGGESTIONS) -> list[Item]:
        """Up to `limit` items whose names or aliases are close to `query`: the best of a WRatio score on the
        lower-cased, abbreviation-expanded text and a plain ratio on the compact form, at least
        SUGGESTION_CUTOFF, best first (ties by name)."""
        query = normalize(query)
        scored: dict[str, float] = {}
        for scorer, text, choices in (
            (fuzz.WRatio, _expand(query).lower(), self._choices_lower),
            (fuzz.ratio, _compact(query), self._choices_compact),
        ):
            # Scores below the cutoff are dropped below anyway; skipping them early changes nothing.
            for _, score, index in process.extract(
                text, choices, scorer=scorer, limit=limit * 3, score_cutoff=SUGGESTION_CUTOFF
            ):
                name = self._choice_items[index].name
                scored[name] = max(scored.get(name, 0.0), score)
        ranked = sorted(
            (name for name, score in scored.items() if score >= SUGGESTION_CUTOFF),
            key=lambda name: (-scored[name], name),
        )
        return [self._by_key[_compact(name)] for name in ranked[:limit]]

    # --- search ---------------------------------------------------------------------------------

    def search(self, text: str, limit: int = 10) -> list[Item]:
        """Items ranked by how well they match every word of `text`.

        Words match names, purposes, Microsoft's text and the capability; the flag words "cpv", "p2",
        "future", "active", "removed", "retired", "new" and "privileged" select on the item's attributes.
        """
        terms = [term for term in _words(_expand(normalize(text))) if term]
        if not terms:
            return []
        results: list[tuple[float, int, Item]] = []
        for position, item in enumerate(self.items):
            fields = self._search_fields[item.name]
            per_term = [_term_score(term, item, fields) for term in terms]
            matched = sum(1 for score in per_term if score > 0)
            if matched == 0:
                continue
            # Items matching every word come first; then by total weight, then document order.
            results.append((matched * 1000 + sum(per_term), -position, item))
        results.sort(key=lambda row: (row[0], row[1]), reverse=True)
        best = results[0][0] // 1000 if results else 0
        return [item for score, _, item in results if score // 1000 == best][:limit]

    # --- revisions ------------------------------------------------------------------------------

    @property
    def latest(self) -> Revision:
        return self.revisions[-1]

    def revision(self, version: str) -> Revision:
        wanted = version.strip().lower()
        if wanted == "latest":
            return self.latest
        if wanted.isdigit():
            wanted = f"v{wanted}"
        for revision in self.revisions:
            if revision.version == wanted:
                return revision
        known = ", ".join(f"{r.version} ({r.date.isoformat()})" for r in self.revisions)
        raise UnknownVersion(f"There is no revision {version!r} in the document. Known revisions: {known}.")

    def items_at(self, version: str) -> list[Item]:
        """The permission set the document describes at a revision, in catalog order."""
        members = self._membership[self.revision(version).version]
        return [item for item in self.items if item.name in members]

    def diff(self, from_version: str | None = None, to_version: str | None = None) -> Diff:
        """What changed between two revisions, in either direction (default: previous → latest)."""
        to_revision = self.revision(to_version) if to_version else self.latest
        if from_version:
            from_revision = self.revision(from_version)
        else:
            index = self.revisions.index(to_revision)
            from_revision = self.revisions[max(index - 1, 0)]
        before = self._membership[from_revision.version]
        after = self._membership[to_revision.version]
        return Diff(
            from_version=from_revision.version,
            to_version=to_revision.version,
            added=tuple(item for item in self.items if item.name in after - before),
            removed=tuple(item for item in self.items if item.name in before - after),
        )

    def required_resource_access(self, version: str | None = None) -> list[dict[str, Any]]:
        """Entra `requiredResourceAccess` for the permissions at a revision (roles are not part of it)."""
        by_resource: dict[str, list[dict[str, str | None]]] = {}
        for item in self.items_at(version or self.latest.version):
            if not item.is_permission or item.ids.resource_app_id is None:
                continue
            if item.kind is Kind.application_permission:
                access = {"id": item.ids.application_id, "type": "Role"}
            else:
                access = {"id": item.ids.delegated_id, "type": "Scope"}
            by_resource.setdefault(item.ids.resource_app_id, []).append(access)
        return [
            {"resourceAppId": resource, "resourceAccess": accesses} for resource, accesses in by_resource.items()
        ]

    def _replay(self) -> dict[str, frozenset[str]]:
        membership: dict[str, frozenset[str]] = {}
        current: set[str] = set()
        for revision in self.revisions:
            current = (current | set(revision.added)) - set(revision.removed)
            membership[revision.version] = frozenset(current)
        return membership


def _search_fields(item: Item) -> dict[str, set[str]]:
    return {
        "name": set(_words(" ".join((item.name, *item.aliases)))),
        "purpose": set(_words(item.purpose or "")),
        "capability": set(_words(f"{item.impact.capability_title} {item.impact.capability_summary}")),
        "microsoft": set(_words(f"{item.microsoft.display_name or ''} {item.microsoft.description or ''}")),
        "api": set(_words(f"{item.api_title} {item.kind_title}")),
    }


_FIELD_WEIGHTS = {"name": 8.0, "purpose": 5.0, "capability": 3.0, "api": 2.0, "microsoft": 1.0}


def _term_score(term: str, item: Item, fields: dict[str, set[str]]) -> float:
    flags = {
        "cpv": item.cpv_only,
        "p2": item.p2_only,
        "future": item.status is Status.future,
        "active": item.status is Status.active,
        "removed": item.status is Status.removed,
        "retired": item.status is Status.removed,
        "new": item.new_marker,
        "privileged": item.impact.privilege.value == "privileged",
    }
    if term in flags:
        # Flag words select on the attribute alone: "future" must not pull in active items whose purpose
        # mentions a "(future)" extension.
        return 10.0 if flags[term] else 0.0
    score = 0.0
    for field, words in fields.items():
        if term in words:
            score += _FIELD_WEIGHTS[field]
        elif len(term) >= 4 and any(word.startswith(term) for word in words):
            score += _FIELD_WEIGHTS[field] / 2
    return score


# --- loading ---------------------------------------------------------------------------------------


def _revisions(raw: list[dict[str, Any]], known: set[str]) -> list[Revision]:
    revisions = []
    for entry in raw:
        renames: dict[str, str] = entry.get("document_names", {})
        added = tuple(renames.get(name, name) for name in entry["added"])
        notes = tuple(
            f"The document writes {written}; the table lists it as {meant}." for written, meant in renames.items()
        )
        if entry.get("added_basis") == "inferred":
            notes += ("The document lists no permissions for this revision; these are inferred "
                      "(every current item no later revision adds).",)
        unknown = [name for name in (*added, *entry["removed"]) if name not in known]
        if unknown:
            raise CatalogError(f"{entry['version']} names items missing from items.yaml: {unknown}")
        revisions.append(
            Revision(
                version=entry["version"],
                date=entry["date"],
                document_date=entry["document_date"],
                title=entry["title"],
                added=added,
                removed=tuple(entry["removed"]),
                added_as_written=tuple(entry["added"]),
                added_basis=entry.get("added_basis", "document"),
                notes=notes,
            )
        )
    revisions.sort(key=lambda revision: revision.date)
    return revisions


def _index_lists(groups: Iterable[tuple[str, Iterable[str]]], what: str, names: set[str]) -> dict[str, str]:
    index: dict[str, str] = {}
    for group, members in groups:
        for name in members:
            if name in index:
                raise CatalogError(f"{name} is in two {what} groups")
            index[name] = group
    if missing := names - index.keys():
        raise CatalogError(f"no {what} for {sorted(missing)}")
    if extra := index.keys() - names:
        raise CatalogError(f"{what} names unknown items {sorted(extra)}")
    return index


def build_catalog() -> Catalog:
    raw_items = _read("items.yaml")["items"]
    microsoft = _read("microsoft.yaml")
    impact = _read("impact.yaml")
    raw_discrepancies = _read("discrepancies.yaml")["discrepancies"]
    names = {entry["name"] for entry in raw_items}
    if len(names) != len(raw_items):
        raise CatalogError("items.yaml names an item twice")

    raw_revisions = _read("revisions.yaml")["revisions"]
    revisions = _revisions(raw_revisions, names)
    # A name a revision writes differently from the table still finds the item it means.
    written_as: dict[str, list[str]] = {}
    for entry in raw_revisions:
        for written, meant in entry.get("document_names", {}).items():
            written_as.setdefault(meant, []).append(written)
    introduced: dict[str, Revision] = {}
    removed_in: dict[str, str] = {}
    for revision in revisions:
        for name in revision.added:
            introduced.setdefault(name, revision)
        for name in revision.removed:
            removed_in[name] = revision.version

    capabilities = impact["capabilities"]
    capability_of = _index_lists(((key, cap["items"]) for key, cap in capabilities.items()), "capability", names)
    privilege_of = _index_lists(impact["privilege"].items(), "privilege", names)

    discrepancies: dict[str, list[Discrepancy]] = {}
    for entry in raw_discrepancies:
        for name in entry["items"]:
            if name not in names:
                raise CatalogError(f"discrepancy {entry['id']} names unknown item {name}")
            if entry["kind"] not in DISCREPANCY_LABELS:
                raise CatalogError(f"discrepancy {entry['id']} has kind {entry['kind']!r}, which has no label")
            discrepancies.setdefault(name, []).append(
                Discrepancy(id=entry["id"], kind=entry["kind"], message=entry["message"],
                            document_text=entry["document_text"])
            )

    resources = {Api(api): value for api, value in microsoft["resources"].items()}
    items = []
    for entry in raw_items:
        name = entry["name"]
        api = Api(entry["api"])
        meaning = microsoft["items"].get(name)
        if meaning is None:
            raise CatalogError(f"microsoft.yaml has no entry for {name}")
        if name not in introduced:
            raise CatalogError(f"{name} is in no revision")
        capability = capabilities[capability_of[name]]
        items.append(
            Item(
                **{key: entry.get(key) for key in ("name", "row", "purpose", "huntress_adds")},
                api=api,
                kind=Kind(entry["kind"]),
                new_marker=entry["new_marker"],
                status=Status(entry["status"]),
                cpv_only=entry["cpv_only"],
                p2_only=entry["p2_only"],
                aliases=(*entry.get("aliases", ()), *written_as.get(name, ())),
                introduced_in=introduced[name].version,
                introduced_basis="inferred" if introduced[name].added_basis == "inferred" else "revision",
                removed_in=removed_in.get(name),
                ids=Ids(
                    resource_app_id=resources[api]["app_id"] if api in resources else None,
                    application_id=meaning.get("application_id"),
                    delegated_id=meaning.get("delegated_id"),
                    template_id=meaning.get("template_id"),
                    management_role_name=meaning.get("management_role_name"),
                ),
                microsoft=MicrosoftMeaning(
                    display_name=meaning.get("display_name"),
                    description=meaning.get("description"),
                    description_applies_to=meaning.get("description_applies_to"),
                    privileged_label=meaning.get("privileged_label"),
                    note=meaning.get("note"),
                    sources=tuple(meaning.get("sources", ())),
                ),
                impact=Impact(
                    capability=capability_of[name],
                    capability_title=capability["title"],
                    capability_summary=" ".join(capability["summary"].split()),
                    privilege=Privilege(privilege_of[name]),
                ),
                discrepancies=tuple(discrepancies.get(name, ())),
            )
        )
    catalog = Catalog(items, revisions, resources)
    _check_consistency(catalog)
    return catalog


def _check_consistency(catalog: Catalog) -> None:
    latest = {item.name for item in catalog.items_at(catalog.latest.version)}
    table = {item.name for item in catalog.current_items}
    if latest != table:
        raise CatalogError(f"replaying the revisions does not give the table: {sorted(latest ^ table)}")
    for item in catalog.items:
        if item.kind is Kind.application_permission and not item.ids.application_id:
            raise CatalogError(f"{item.name} is an application permission without an app role id")
        if item.kind is Kind.delegated_permission and not item.ids.delegated_id:
            raise CatalogError(f"{item.name} is a delegated permission without a scope id")
        if item.kind is Kind.directory_role and not item.ids.template_id:
            raise CatalogError(f"{item.name} is a directory role without a template id")


@cache
def load_catalog() -> Catalog:
    """The catalog, built once per process."""
    return build_catalog()
