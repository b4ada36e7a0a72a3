"""The catalog must say exactly what the vendor's document says, flag what it contradicts, and match Microsoft."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml

from catalog import Api, Kind, Status, UnknownVersion, load_catalog
from tests import seed_document

SEED = seed_document.load()
needs_seed = pytest.mark.skipif(SEED is None, reason="the vendor document (../shared/seed) is not beside the checkout")
catalog = load_catalog()


def _table_rows() -> list[tuple[seed_document.Row, str]]:
    assert SEED is not None
    return [(row, name) for row in SEED.rows for name in row.names]


# --- the document's items ----------------------------------------------------------------------------


def test_catalog_holds_the_95_items_of_the_document_by_api() -> None:
    counts: dict[Api, int] = {}
    for item in catalog.current_items:
        counts[item.api] = counts.get(item.api, 0) + 1
    assert len(catalog.current_items) == 95
    assert counts == {
        Api.graph: 73,
        Api.partner_center: 1,
        Api.exchange: 2,
        Api.o365_management: 3,
        Api.entra_role: 11,
        Api.exchange_role_group: 5,
    }


@needs_seed
def test_every_row_of_the_document_is_in_the_catalog_word_for_word() -> None:
    rows = _table_rows()
    assert len(rows) == 95
    assert {name for _, name in rows} == {item.name for item in catalog.current_items}
    for row, name in rows:
        item = catalog.get(name)
        assert item is not None, name
        assert item.api.value == row.section, name
        assert item.purpose == row.purpose, name
        assert item.new_marker == row.new_marker, name


@needs_seed
def test_status_and_flags_follow_the_documents_markers() -> None:
    for row, name in _table_rows():
        item = catalog.get(name)
        assert item is not None
        future = bool(re.match(r"\((Future|Future Use|Future use)\)", row.purpose))
        assert item.status is (Status.future if future else Status.active), name
        assert item.p2_only == ("(Entra ID P2 Licenses only)" in row.purpose), name
        cpv_marked = "CPV Integrations Only" in row.purpose or row.section == "partner_center"
        if row.section == "exchange":
            cpv_marked = name == "Exchange.Manage"  # "(CPV Only)" sits right after Exchange.Manage
        assert item.cpv_only == cpv_marked, name


def test_typos_are_kept_as_written_and_flagged() -> None:
    files = catalog.get("Files.ReadWrite.All")
    assert files is not None and "stile collection" in (files.purpose or "")
    assert [d.kind for d in files.discrepancies if d.kind == "typo"] == ["typo"]
    for name in ("Mail.ReadBasic.All", "Mail.ReadWrite"):
        item = catalog.get(name)
        assert item is not None and "spam camping" in (item.purpose or "")
        assert any("spam campaign" in d.message for d in item.discrepancies)


@needs_seed
def test_every_discrepancy_quotes_the_document() -> None:
    text = (seed_document.shared_dir() / seed_document.SEED_NAME).read_text()  # type: ignore[operator]
    folded = " ".join(text.split())
    quotes = {d.document_text for item in catalog.items for d in item.discrepancies}
    assert quotes
    for quote in quotes:
        assert quote in folded, quote


def test_huntress_assigns_exchange_and_branding_admin_itself() -> None:
    assigned = sorted(item.name for item in catalog.items if item.huntress_adds)
    assert assigned == ["Exchange Administrator", "Organizational Branding Administrator"]


def test_every_item_says_what_stops_working_and_how_much_power_it_grants() -> None:
    for item in catalog.items:
        assert item.impact.capability_title and item.impact.capability_summary, item.name
    privileged = {item.name for item in catalog.items if item.impact.privilege.value == "privileged"}
    assert {"RoleManagement.ReadWrite.Directory", "AppRoleAssignment.ReadWrite.All"} <= privileged
    log_ingest = {item.name for item in catalog.items if item.impact.capability == "log_ingest"}
    assert {"AuditLog.Read.All", "ActivityFeed.Read", "Audit Logs"} <= log_ingest


# --- revisions -------------------------------------------------------------------------------------------


@needs_seed
def test_revision_history_matches_the_document() -> None:
    assert SEED is not None
    by_version = {revision.version: revision for revision in SEED.revisions}
    assert [revision.version for revision in catalog.revisions] == ["v1", "v2", "v3", "v4", "v5", "v6"]
    for revision in catalog.revisions:
        seed = by_version[revision.version]
        assert revision.title == seed.title
        assert revision.document_date == seed.date
        assert revision.date.strftime("%d-%b-%y").upper() == seed.date
        assert list(revision.removed) == seed.removed
        if revision.version != "v1":
            assert list(revision.added_as_written) == seed.added


@needs_seed
def test_introduced_in_is_the_first_revision_naming_the_item() -> None:
    assert SEED is not None
    named: dict[str, str] = {}
    for revision in sorted(SEED.revisions, key=lambda r: r.version):
        for name in revision.added:
            item = catalog.get(name)  # v2's IdentityRiskyUser.ReadWrite.All resolves to the table's name
            assert item is not None, name
            named.setdefault(item.name, revision.version)
    for item in catalog.items:
        assert item.introduced_in == named.get(item.name, "v1"), item.name
        assert item.introduced_basis == ("revision" if item.name in named else "inferred")


def _replay_from_document() -> dict[str, set[str]]:
    """Membership per revision, replayed from the seed's own lists (v1 = the catalog's inferred baseline)."""
    assert SEED is not None
    members: dict[str, set[str]] = {}
    current = {item.name for item in catalog.items_at("v1")}
    for revision in sorted(SEED.revisions, key=lambda r: r.version):
        added = {catalog.get(name).name for name in revision.added}  # type: ignore[union-attr]
        current = (current | added) - set(revision.removed)
        members[revision.version] = set(current)
    return members


@needs_seed
def test_replaying_the_revisions_reproduces_the_documents_table() -> None:
    members = _replay_from_document()
    assert members["v6"] == {name for _, name in _table_rows()}
    for version, names in members.items():
        assert {item.name for item in catalog.items_at(version)} == names, version


@needs_seed
def test_every_revision_pair_diffs_like_a_replay_in_both_directions() -> None:
    members = _replay_from_document()
    for old, new in itertools.permutations(members, 2):
        diff = catalog.diff(old, new)
        assert (diff.from_version, diff.to_version) == (old, new)
        assert {item.name for item in diff.added} == members[new] - members[old], (old, new)
        assert {item.name for item in diff.removed} == members[old] - members[new], (old, new)


def test_default_diff_is_previous_to_latest() -> None:
    diff = catalog.diff()
    assert (diff.from_version, diff.to_version) == ("v5", "v6")
    assert [item.name for item in diff.added] == ["AppRoleAssignment.ReadWrite.All"]
    assert diff.removed == ()


def test_v5_retired_the_read_only_security_permissions() -> None:
    diff = catalog.diff("v4", "v5")
    assert len(diff.added) == 36
    removed = [item.name for item in diff.removed]
    assert removed == ["SecurityActions.Read.All", "SecurityAlert.Read.All", "SecurityEvents.Read.All"]
    assert all(item.status is Status.removed and item.removed_in == "v5" for item in diff.removed)


def test_the_v2_name_mismatch_is_recorded_not_fixed() -> None:
    item = catalog.get("IdentityRiskyUser.Read.All")
    assert item is not None
    assert item.introduced_in == "v2"
    assert [d.id for d in item.discrepancies if d.kind == "name_mismatch"] == ["v2-identityriskyuser-name"]
    v2 = catalog.revision("v2")
    assert "IdentityRiskyUser.ReadWrite.All" in v2.added_as_written
    assert any("IdentityRiskyUser.ReadWrite.All" in note for note in v2.notes)


@pytest.mark.parametrize("spelling", ["v5", "V5", "5", " v5 "])
def test_revisions_accept_common_spellings(spelling: str) -> None:
    assert catalog.revision(spelling).version == "v5"


def test_an_unknown_revision_names_the_known_ones() -> None:
    with pytest.raises(UnknownVersion) as raised:
        catalog.revision("v9")
    assert "v9" in str(raised.value) and "v6 (2025-12-29)" in str(raised.value)


# --- Microsoft identifiers ---------------------------------------------------------------------------------


def _reference() -> dict | None:
    folder = seed_document.shared_dir()
    path = folder / "reference/microsoft-identifiers.yaml" if folder else None
    return yaml.safe_load(path.read_text()) if path and path.is_file() else None


REFERENCE = _reference()
needs_reference = pytest.mark.skipif(REFERENCE is None, reason="../shared/reference is not beside the checkout")


@needs_reference
def test_every_identifier_matches_the_published_reference() -> None:
    assert REFERENCE is not None
    resources = REFERENCE["resources"]
    app_ids = {
        Api.graph: resources["microsoft_graph"]["app_id"],
        Api.exchange: resources["office365_exchange_online"]["app_id"],
        Api.o365_management: resources["office365_management_apis"]["app_id"],
        Api.partner_center: resources["microsoft_partner_center"]["app_id"],
    }
    checked = 0
    for item in catalog.items:
        ids = item.ids
        assert ids.resource_app_id == app_ids.get(item.api), item.name
        if item.api is Api.graph:
            ref = REFERENCE["graph_permissions"][item.name]
            assert (ids.application_id, ids.delegated_id) == (ref["application_id"], ref["delegated_id"])
            assert item.microsoft.display_name == ref["display_name"]
        elif item.api is Api.exchange:
            ref = REFERENCE["exchange"][item.name]
            expected = ref["id"]
            assert (ids.application_id if item.kind is Kind.application_permission else ids.delegated_id) == expected
        elif item.api is Api.o365_management:
            ref = REFERENCE["office365_management"][item.name]
            assert (ids.application_id, ids.delegated_id) == (ref["application_id"], ref["delegated_id"])
        elif item.api is Api.partner_center:
            assert ids.delegated_id == REFERENCE["partner_center"][item.name]["delegated_id"]
        elif item.api is Api.entra_role:
            assert ids.template_id == REFERENCE["entra_roles"][item.name]["template_id"]
        else:
            role = REFERENCE["exchange_roles"]["roles"][item.name]
            assert ids.management_role_name == role["management_role_name"]
        checked += 1
    assert checked == 98


def test_permission_kinds_match_what_microsoft_publishes() -> None:
    delegated = {item.name for item in catalog.items if item.kind is Kind.delegated_permission}
    assert delegated == {"Directory.AccessAsUser.All", "user_impersonation", "Exchange.Manage"}
    for item in catalog.items:
        if item.kind is Kind.application_permission:
            assert item.ids.application_id, item.name


# --- lookup and search --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Mail.ReadWrite", "Mail.ReadWrite"),
        ("mail.readwrite", "Mail.ReadWrite"),
        ("  MAIL.READWRITE ", "Mail.ReadWrite"),
        ("mail readwrite", "Mail.ReadWrite"),
        ("exchange admin", "Exchange Administrator"),
        ("Exchange Administrator", "Exchange Administrator"),
        ("org branding admin", "Organizational Branding Administrator"),
        ("Organization Branding Administrator", "Organizational Branding Administrator"),
        ("user_impersonation", "user_impersonation"),
        ("servicehealth.read", "ServiceHealth.Read"),
        ("ServiceHealth.Read.All", "ServiceHealth.Read.All"),
        ("audit logs", "Audit Logs"),
        ("IdentityRiskyUser.ReadWrite.All", "IdentityRiskyUser.Read.All"),
    ],
)
def test_exact_lookup_forgives_case_spacing_and_abbreviations(query: str, expected: str) -> None:
    found = catalog.lookup(query)
    assert found.item is not None and found.item.name == expected


@pytest.mark.parametrize(
    ("typo", "expected"),
    [
        ("mail.readwite", "Mail.ReadWrite"),
        ("Mail.ReadWirte", "Mail.ReadWrite"),
        ("exchange adminstrator", "Exchange Administrator"),
        ("Policy.ReadWrite.ConditionalAcess", "Policy.ReadWrite.ConditionalAccess"),
        ("AuditLogs.Read.All", "AuditLog.Read.All"),
        ("user_impersonaton", "user_impersonation"),
    ],
)
def test_typos_get_the_intended_item_as_first_suggestion(typo: str, expected: str) -> None:
    found = catalog.lookup(typo)
    assert found.item is None
    assert found.suggestions and found.suggestions[0].name == expected


def test_nonsense_gets_no_suggestions() -> None:
    assert catalog.lookup("qwxz").suggestions == ()
    assert catalog.lookup("").item is None


@pytest.mark.parametrize(
    ("words", "must_include"),
    [
        ("phishing", {"Mail.ReadBasic.All", "Mail.ReadWrite"}),
        ("audit", {"AuditLog.Read.All", "AuditLogsQuery.Read.All", "Audit Logs"}),
        ("CPV", {"Directory.AccessAsUser.All", "user_impersonation", "Exchange.Manage",
                 "DelegatedAdminRelationship.Read.All", "PartnerSecurity.ReadWrite.All"}),
        ("p2", {"IdentityRiskEvent.ReadWrite.All", "IdentityRiskyServicePrincipal.ReadWrite.All",
                "IdentityRiskyUser.Read.All"}),
    ],
)
def test_search_finds_items_by_purpose_flags_and_names(words: str, must_include: set[str]) -> None:
    found = {item.name for item in catalog.search(words, limit=20)}
    assert must_include <= found


def test_search_for_future_returns_only_future_items() -> None:
    found = catalog.search("future", limit=100)
    assert len(found) == sum(1 for item in catalog.items if item.status is Status.future)
    assert all(item.status is Status.future for item in found)


def test_search_with_several_words_prefers_items_matching_all() -> None:
    found = catalog.search("cpv exchange")
    assert found[0].name == "Exchange.Manage"


# --- manifest ----------------------------------------------------------------------------------------


def test_manifest_lists_every_permission_once_with_its_type() -> None:
    access = {entry["resourceAppId"]: entry["resourceAccess"] for entry in catalog.required_resource_access()}
    graph = access["00000003-0000-0000-c000-000000000000"]
    assert len(graph) == 73
    assert sum(1 for entry in graph if entry["type"] == "Scope") == 1  # Directory.AccessAsUser.All
    assert len({entry["id"] for entry in graph}) == 73
    exchange = access["00000002-0000-0ff1-ce00-000000000000"]
    assert {"id": "dc50a0fb-09a3-484d-be87-e023b12c6440", "type": "Role"} in exchange
    assert {"id": "ab4f2b77-0b06-4fc1-a9de-02113fc2ab7c", "type": "Scope"} in exchange
    assert access["fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd"] == [
        {"id": "1cebfa2a-fb4d-419e-b5f9-839b4383e05a", "type": "Scope"}
    ]
    assert len(access["c5393580-f805-4401-95e8-94b7a6ef2fc2"]) == 3


def test_manifest_of_an_old_revision_has_that_revisions_permissions() -> None:
    access = catalog.required_resource_access("v3")
    graph_ids = {entry["id"] for entry in access[0]["resourceAccess"]}
    security_alert_read = catalog.get("SecurityAlert.Read.All")
    assert security_alert_read is not None and security_alert_read.ids.application_id in graph_ids
    assert catalog.get("Mail.ReadWrite").ids.application_id not in graph_ids  # type: ignore[union-attr]


def test_catalog_data_has_no_io_beyond_its_own_files() -> None:
    source = "\n".join(p.read_text() for p in Path("catalog").glob("*.py"))
    for forbidden in ("httpx", "redis", "slack", "msal", "requests"):
        assert f"import {forbidden}" not in source
