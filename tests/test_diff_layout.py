"""A diff read in one look: grouping by purpose, name summaries, and both renderings (Slack blocks, terminal)."""

from __future__ import annotations

import itertools
import re

import pytest

from bot.terminal import WIDTH, render_diff
from catalog import Diff, Item, diff_layout, group_by_purpose, load_catalog, summarize_names
from catalog.diffs import CPV_ONLY, name_pattern
from handlers.blocks import answers
from handlers.blocks.answers import diff_message
from handlers.blocks.kit import MAX_FALLBACK_TEXT, MAX_HEADER_TEXT, MAX_MESSAGE_BLOCKS, MAX_SECTION_TEXT
from handlers.ids import SubCommand
from handlers.payloads import AnswerRequest
from handlers.router import render

catalog = load_catalog()
VERSIONS = [revision.version for revision in catalog.revisions]
PAIRS = list(itertools.permutations(VERSIONS, 2))
ISPM = "(Future Use) ISPM"


def names_in(text: str) -> list[str]:
    """Backticked names in mrkdwn; summary patterns hold a `*` and are no names."""
    return [code for code in re.findall(r"`([^`]+)`", text) if "*" not in code]


def sections(blocks: list[dict]) -> list[str]:
    return [block["text"]["text"] for block in blocks if block["type"] == "section"]


def changes(blocks: list[dict]) -> list[str]:
    return [text for text in sections(blocks) if text.startswith((":heavy_minus_sign:", ":heavy_plus_sign:"))]


def ask_diff(*args: str, page: int = 0) -> answers.Message:
    return render(catalog, AnswerRequest(cmd=SubCommand.DIFF, args=args, page=page))


def action_ids(blocks: list[dict]) -> list[str]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def fake_items(count: int) -> tuple[Item, ...]:
    """`count` distinct items with distinct purposes: a diff far bigger than any in the document."""
    base = catalog.lookup("Mail.ReadWrite").item
    assert base is not None
    return tuple(
        base.model_copy(update={"name": f"Fake{n:03d}.ReadWrite.All", "purpose": f"Purpose {n}: " + "x" * 150})
        for n in range(count)
    )


class TestGrouping:
    def test_v5_additions_are_one_group_with_count_summary_and_purpose(self) -> None:
        (group,) = group_by_purpose(catalog.diff("v4", "v5").added)
        assert len(group.items) == 36
        assert group.label == ISPM
        assert group.summary.format() == "Policy.ReadWrite.*, DeviceManagement*, User.* and 12 others"

    def test_removed_items_without_purpose_say_when_they_were_retired(self) -> None:
        (group,) = group_by_purpose(catalog.diff("v4", "v5").removed)
        assert group.purpose is None
        assert group.label == "not in the current document (retired in v5)"
        assert group.summary.format() == "Security*.Read.All"

    def test_larger_groups_first_then_document_order(self) -> None:
        items = catalog.diff("v1", "v6").added
        groups = group_by_purpose(items)
        assert [len(g.items) for g in groups][:4] == [36, 4, 3, 1]
        singles = [g.items[0] for g in groups if len(g.items) == 1]
        assert singles == [item for item in items if item in singles], "one-item lines keep document order"
        for group in groups:
            assert list(group.items) == [item for item in items if item in group.items]
        assert group_by_purpose(items) == groups, "deterministic"

    def test_every_item_is_in_exactly_one_group(self) -> None:
        for old, new in PAIRS:
            diff = catalog.diff(old, new)
            for items in (diff.added, diff.removed):
                grouped = [item.name for group in group_by_purpose(items) for item in group.items]
                assert sorted(grouped) == sorted(item.name for item in items), (old, new)

    def test_purposes_differing_only_in_whitespace_group_together(self) -> None:
        one, two = fake_items(2)
        assert one.purpose is not None
        two = two.model_copy(update={"purpose": "  " + one.purpose.replace(" ", "  ") + " "})
        assert len(group_by_purpose([one, two])) == 1

    def test_flags_the_purpose_does_not_state_are_kept(self) -> None:
        manage, as_app = (catalog.lookup(name).item for name in ("Exchange.Manage", "Exchange.ManageAsApp"))
        assert manage is not None and as_app is not None
        (group,) = group_by_purpose([manage, as_app])
        assert group.flags == ()
        assert group.flags_of(manage) == (CPV_ONLY,)
        assert group.flags_of(as_app) == ()
        (ispm,) = group_by_purpose(catalog.diff("v4", "v5").added)
        assert ispm.flags == (), "'(Future Use)' already says future use"

    def test_where_is_named_only_when_shared(self) -> None:
        layout = diff_layout(catalog.diff("v4", "v5"))
        assert [side.where for side in layout.sides] == ["Microsoft Graph application permissions"] * 2
        graph, management = (catalog.lookup(n).item for n in ("AuditLog.Read.All", "ActivityFeed.Read"))
        assert graph is not None and management is not None
        (mixed,) = group_by_purpose([graph, management])
        assert mixed.where is None


class TestNameSummary:
    @pytest.mark.parametrize(
        ("names", "pattern"),
        [
            (["SecurityActions.ReadWrite.All", "SecurityAlert.ReadWrite.All", "SecurityEvents.ReadWrite.All"],
             "Security*.ReadWrite.All"),
            (["SecurityActions.Read.All", "SecurityAlert.Read.All"], "SecurityA*.Read.All"),
            (["DeviceManagementApps.ReadWrite.All", "DeviceManagementRBAC.ReadWrite.All",
              "DeviceManagementManagedDevices.PrivilegedOperations.All"], "DeviceManagement*"),
            (["Policy.ReadWrite.AccessReview", "Policy.ReadWrite.Authorization"], "Policy.ReadWrite.A*"),
            (["Policy.ReadWrite.AccessReview", "Policy.ReadWrite.TrustFramework"], "Policy.ReadWrite.*"),
            (["User.Export.All", "User.Invite.All"], "User.*"),
            (["IdentityRiskEvent.ReadWrite.All", "IdentityRiskyUser.Read.All"], "IdentityRisk*"),
        ],
    )
    def test_pattern(self, names: list[str], pattern: str) -> None:
        assert name_pattern(names) == pattern

    def test_largest_clusters_first_and_others_counted(self) -> None:
        summary = summarize_names(["A1.X", "Group.Read.All", "Group.ReadWrite.All", "User.A.All", "User.B.All",
                                   "User.C.All", "Zed.All"])
        assert summary.patterns == ("User.*", "Group.Read*")
        assert summary.others == 2
        assert summary.format(lambda p: f"`{p}`") == "`User.*`, `Group.Read*` and 2 others"

    def test_two_patterns_read_as_a_pair_and_unrelated_names_give_no_pattern(self) -> None:
        assert summarize_names(["Policy.ReadWrite.A", "Policy.ReadWrite.B", "DeviceA.X", "DeviceB.X"]).format() == (
            "Policy.ReadWrite.* and Device*"
        )
        assert summarize_names(["Foo.Read.All", "Bar.Read.All"]).format() == ""
        assert summarize_names([]).format() == ""


class TestLayout:
    def test_removed_side_comes_first_and_backwards_swaps(self) -> None:
        forward, backward = diff_layout(catalog.diff("v4", "v5")), diff_layout(catalog.diff("v5", "v4"))
        assert [(s.change, len(s.items)) for s in forward.sides] == [("removed", 3), ("added", 36)]
        assert [(s.change, len(s.items)) for s in backward.sides] == [("removed", 36), ("added", 3)]
        assert forward.summary == "+36 added, −3 removed"
        assert backward.title == "Changes v5 → v4"

    def test_empty_diff_has_no_sides(self) -> None:
        assert diff_layout(catalog.diff("v4", "v4")).sides == ()


class TestSlackMessage:
    def test_v4_v5_is_one_message_removed_first_every_name_once(self) -> None:
        message = ask_diff("v4", "v5")
        assert "itdr-show-more" not in action_ids(message.blocks)
        removed, added = changes(message.blocks)
        assert removed.startswith(":heavy_minus_sign: *Removed (3)*")
        assert added.startswith(":heavy_plus_sign: *Added (36)*")
        assert "• *3* `Security*.Read.All`: not in the current document (retired in v5)" in removed
        assert f"• *36* `Policy.ReadWrite.*`, `DeviceManagement*`, `User.*` and 12 others: {ISPM}" in added
        diff = catalog.diff("v4", "v5")
        assert names_in(removed) == [item.name for item in diff.removed]
        assert sorted(names_in(added)) == sorted(item.name for item in diff.added)

    def test_fallback_text_names_every_change_removed_first(self) -> None:
        text = ask_diff("v4", "v5").text
        assert text.startswith("Changes v4 → v5: +36 added, −3 removed. Removed: SecurityActions.Read.All, ")
        assert text.index("Removed:") < text.index("Added:")
        diff = catalog.diff("v4", "v5")
        for item in diff.added + diff.removed:
            assert re.search(rf"[ ,:]{re.escape(item.name)}[,.]", text), item.name
        assert len(text) <= MAX_FALLBACK_TEXT

    def test_one_item_lines_carry_name_and_purpose(self) -> None:
        (added,) = changes(ask_diff("v5", "v6").blocks)
        assert added.splitlines()[1] == (
            "• `AppRoleAssignment.ReadWrite.All` — For enhanced onboarding experience and dynamic management of "
            "the Huntress Identity Security application."
        )

    def test_revision_notes_and_summary_stay(self) -> None:
        note_revision = next(r for r in catalog.revisions if r.notes and r.number > 1)
        previous = f"v{note_revision.number - 1}"
        body = sections(ask_diff(previous, note_revision.version).blocks)[0]
        assert body.startswith("*+")
        assert note_revision.notes[0][:40] in body

    @pytest.mark.parametrize(("old", "new"), [*PAIRS, ("v4", "v4")])
    def test_every_pair_fits_one_message_within_block_kit_limits(self, old: str, new: str) -> None:
        message = ask_diff(old, new)
        assert len(message.blocks) <= MAX_MESSAGE_BLOCKS
        assert all(len(text) <= MAX_SECTION_TEXT for text in sections(message.blocks))
        assert len(message.blocks[0]["text"]["text"]) <= MAX_HEADER_TEXT
        assert "itdr-show-more" not in action_ids(message.blocks)
        assert message.text.startswith(f"Changes {old} → {new}")
        diff = catalog.diff(old, new)
        shown = [name for text in changes(message.blocks) for name in names_in(text)]
        assert sorted(shown) == sorted(item.name for item in diff.added + diff.removed), "every name exactly once"
        removed = {item.name for item in diff.removed}
        assert shown == sorted(shown, key=lambda name: name not in removed), "removed before added"

    def test_default_diff_fits(self) -> None:
        message = ask_diff()
        assert message.text.startswith(f"Changes {catalog.revisions[-2].version} → {catalog.latest.version}")
        assert "itdr-show-more" not in action_ids(message.blocks)

    def test_empty_diff_says_so(self) -> None:
        message = ask_diff("v4", "v4")
        assert "No permission or role changes between v4 and v4." in sections(message.blocks)
        assert message.text == "Changes v4 → v4: +0 added, −0 removed."


class TestPagingFallback:
    def test_a_diff_too_big_for_one_message_pages_every_name_once(self) -> None:
        diff = Diff(from_version="v1", to_version="v6", added=fake_items(400))
        request = AnswerRequest(cmd=SubCommand.DIFF, args=("v1", "v6"))
        seen: list[str] = []
        page = 0
        while True:
            message = diff_message(diff, request.with_page(page))
            assert len(message.blocks) <= MAX_MESSAGE_BLOCKS
            assert all(len(text) <= MAX_SECTION_TEXT for text in sections(message.blocks))
            assert message.text.startswith("Changes v1 → v6")
            assert len(message.text) <= MAX_FALLBACK_TEXT
            seen += [name for text in changes(message.blocks) for name in names_in(text)]
            if "itdr-show-more" not in action_ids(message.blocks):
                break
            page += 1
        assert page >= 2
        assert seen == [item.name for item in diff.added]
        assert "(page 2 of" in diff_message(diff, request.with_page(1)).blocks[0]["text"]["text"]

    def test_one_huge_group_keeps_every_name_and_splits_across_sections(self) -> None:
        items = tuple(item.model_copy(update={"purpose": ISPM}) for item in fake_items(300))
        message = diff_message(Diff(from_version="v1", to_version="v6", added=items),
                               AnswerRequest(cmd=SubCommand.DIFF))
        texts = changes(message.blocks)
        assert len(texts) > 1 and texts[1].startswith(":heavy_plus_sign: *Added (300)*") and "(cont.)" in texts[1]
        assert [name for text in texts for name in names_in(text)] == [item.name for item in items]
        assert all(len(text) <= MAX_SECTION_TEXT for text in sections(message.blocks))

    def test_fallback_text_stops_at_a_whole_name_and_counts_the_rest(self) -> None:
        items = tuple(item.model_copy(update={"purpose": ISPM}) for item in fake_items(150))
        diff = Diff(from_version="v1", to_version="v6", added=items)
        message = diff_message(diff, AnswerRequest(cmd=SubCommand.DIFF))
        assert "itdr-show-more" not in action_ids(message.blocks), "150 names fit the blocks, not the text"
        text = message.text
        assert len(text) <= MAX_FALLBACK_TEXT
        match = re.search(r"Added: (.*) … and (\d+) more\.", text)
        assert match is not None
        listed = match.group(1).split(", ")
        assert listed == [item.name for item in diff.added[: len(listed)]]
        assert len(listed) + int(match.group(2)) == 150


class TestTerminal:
    def test_v4_v5_removed_first_grouped_every_name(self) -> None:
        out = render_diff(catalog, catalog.diff("v4", "v5"))
        lines = out.splitlines()
        assert lines[0] == "Changes v4 → v5"
        assert "+36 added, −3 removed" in lines
        assert out.index("Removed (3)") < out.index("Added (36)")
        assert "  - 3 Security*.Read.All: not in the current document (retired in v5)" in lines
        assert f"  + 36 Policy.ReadWrite.*, DeviceManagement*, User.* and 12 others: {ISPM}" in lines
        diff = catalog.diff("v4", "v5")
        for item in diff.added + diff.removed:
            assert len(re.findall(rf"(?<![\w.]){re.escape(item.name)}(?![\w.])", out)) == 1, item.name

    @pytest.mark.parametrize(("old", "new"), PAIRS)
    def test_every_pair_fits_100_columns_and_names_every_change(self, old: str, new: str) -> None:
        out = render_diff(catalog, catalog.diff(old, new))
        assert max(len(line) for line in out.splitlines()) <= WIDTH
        diff = catalog.diff(old, new)
        for item in diff.added + diff.removed:
            assert re.search(rf"(?<![\w.]){re.escape(item.name)}(?![\w.])", out), item.name

    def test_backwards_and_empty(self) -> None:
        out = render_diff(catalog, catalog.diff("v5", "v4"))
        assert out.index("Removed (36)") < out.index("Added (3)")
        assert render_diff(catalog, catalog.diff("v4", "v4")).endswith("\n\nNo permission or role changed.")
