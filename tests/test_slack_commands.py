"""`/itdr` sub-commands end to end: signed slash commands over real HTTP to the app served by uvicorn,
answers checked where Slack would receive them (the fake's response_url)."""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterator
from typing import Any

from tests.fakes.slack import RESPONSE, FakeSlack
from tests.fakes.slack_blocks import message_violations
from tests.fakes.slack_client import SlackSim, all_action_ids, find_button


async def ask(slack: SlackSim, fake: FakeSlack, text: str) -> dict:
    """Send `/itdr text` and return the answer, which rides on the ack itself: one exchange, within 3 s, valid
    Block Kit, and nothing posted to the response_url."""
    started = time.monotonic()
    response, form = await slack.command(text)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 3, "Slack needs the ack within 3 s"
    answer = response.json()
    assert message_violations(answer) == []
    assert not [c for c in fake.calls_to(RESPONSE) if c.path.endswith(form["response_url"].rsplit("/", 1)[1])]
    return answer


def block_text(blocks: list[dict]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


class TestWhy:
    async def test_known_permission(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "why Mail.ReadWrite")
        assert answer["response_type"] == "ephemeral"
        assert answer["text"].startswith("Mail.ReadWrite: Microsoft Graph application permission")
        text = block_text(answer["blocks"])
        for part in (
            "Why Huntress needs it",
            "What Microsoft says it allows",
            "If it is missing",
            "Introduced in",
            "Status:",
            "Privilege:",
        ):
            assert part in text
        assert answer["blocks"][0] == {
            "type": "header",
            "block_id": "itdr-header",
            "text": {"type": "plain_text", "text": "Mail.ReadWrite"},
        }
        assert find_button(answer["blocks"], "itdr-share")["value"] == '{"c":"why","a":["Mail.ReadWrite"]}'

    async def test_case_insensitive_and_role_names(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "why exchange administrator")
        assert answer["blocks"][0]["text"]["text"] == "Exchange Administrator"
        assert "directory role" in answer["text"]

    async def test_discrepancies_are_shown(self, slack: SlackSim, fake_slack: FakeSlack):
        from catalog import load_catalog

        item = next(i for i in load_catalog().items if i.discrepancies)
        answer = await ask(slack, fake_slack, f"why {item.name}")
        assert "Discrepancy" in block_text(answer["blocks"])

    async def test_labels_are_words_not_internal_names(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "why Mail.ReadWrite")
        text = block_text(answer["blocks"])
        assert "*Status:* Future use (not required yet)" in text
        assert "*Privilege:* read/write" in text
        assert "*Discrepancy: Missing NEW! marker*" in text and "*Discrepancy: Typo*" in text
        assert "missing_new_marker" not in text

    async def test_typo_offers_did_you_mean_buttons(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "why mail.readwite")
        assert "Did you mean" in answer["text"]
        first = find_button(answer["blocks"], "itdr-ask")
        assert first["text"]["text"] == "Mail.ReadWrite"
        assert json.loads(first["value"]) == {"c": "why", "a": ["Mail.ReadWrite"]}
        assert "itdr-share" not in all_action_ids(answer["blocks"]), "nothing worth sharing in a miss"

    async def test_full_width_name(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "why Ｍａｉｌ．ＲｅａｄＷｒｉｔｅ")
        assert answer["blocks"][0]["text"]["text"] == "Mail.ReadWrite"
        assert answer["text"].startswith("Mail.ReadWrite: Microsoft Graph application permission")

    async def test_why_without_name_gets_help(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "why")
        assert "needs a name" in answer["text"]
        assert "/itdr why NAME" in answer["text"]


class TestSearch:
    async def test_keywords(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "search phishing")
        assert answer["text"].startswith("Search phishing: ")
        assert "Mail.ReadWrite" in answer["text"]
        why = find_button(answer["blocks"], "itdr-ask", "Why?")
        assert json.loads(why["value"])["c"] == "why"

    async def test_no_match(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "search zzqqxx")
        assert "Nothing in the catalog matches" in answer["text"]


def _texts(value: Any) -> Iterator[str]:
    """Every text Slack shows: the fallback `text` and each block's texts (not button values, never shown)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                yield item
            else:
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def invisible(answer: dict) -> set[str]:
    """Control and format characters anywhere in what Slack would show, line breaks aside."""
    texts = list(_texts({"text": answer["text"], "blocks": answer["blocks"]}))
    assert len(texts) >= 2
    return {char for text in texts for char in text if char != "\n" and unicodedata.category(char) in ("Cc", "Cf")}


class TestUserTextIsCleaned:
    """A terminal escape or a bidi override typed (or pasted) into `/itdr` never comes back in the answer."""

    async def test_search_with_matches(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "search phishing \x1b[31m\u202egnihsihp")
        assert answer["blocks"][0]["text"]["text"] == "Search: phishing [31mgnihsihp"
        assert invisible(answer) == set()

    async def test_search_without_matches(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "search zzqq\x1b[31mxx\u202e\x85yy")
        assert "Nothing in the catalog matches" in answer["text"]
        assert "`zzqq[31mxx yy`" in block_text(answer["blocks"])  # NEL (U+0085) separates words, like a space
        assert invisible(answer) == set()

    async def test_why_not_found(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "why \x1b[31mqwxz\x07")
        assert "No catalog entry is named `[31mqwxz`" in block_text(answer["blocks"])
        assert invisible(answer) == set()


class TestVersions:
    async def test_lists_revisions_newest_first(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "versions")
        text = answer["text"]
        assert text.index("v6") < text.index("v5") < text.index("v1")
        assert "(current)" in block_text(answer["blocks"])
        diff = find_button(answer["blocks"], "itdr-ask", "Diff v4→v5")
        assert json.loads(diff["value"]) == {"c": "diff", "a": ["v4", "v5"]}


class TestDiff:
    async def test_v4_v5_is_one_message_removed_first_grouped_by_purpose(self, slack: SlackSim, fake_slack: FakeSlack):
        from catalog import load_catalog

        diff = load_catalog().diff("v4", "v5")
        answer = await ask(slack, fake_slack, "diff v4 v5")
        assert answer["text"].startswith("Changes v4 → v5: +36 added, −3 removed. Removed: ")
        assert len(answer["blocks"]) <= 50
        assert "itdr-show-more" not in all_action_ids(answer["blocks"]), "no second page"
        text = block_text(answer["blocks"])
        for item in diff.added + diff.removed:
            assert text.count(f"`{item.name}`") == 1, item.name
        assert max(text.index(f"`{i.name}`") for i in diff.removed) < min(text.index(f"`{i.name}`") for i in diff.added)
        assert "• *36* `Policy.ReadWrite.*`, `DeviceManagement*`, `User.*` and 12 others: (Future Use) ISPM" in text
        assert "• *3* `Security*.Read.All`: not in the current document (retired in v5)" in text

    async def test_every_revision_pair_is_one_valid_message(self, slack: SlackSim, fake_slack: FakeSlack):
        """The fake Slack fails the test on any Block Kit violation; each pair also fits without "Show more"."""
        from catalog import load_catalog

        catalog = load_catalog()
        versions = [revision.version for revision in catalog.revisions]
        pairs = [(old, new) for old in versions for new in versions if old != new]
        for old, new in pairs:
            answer = await ask(slack, fake_slack, f"diff {old} {new}")
            assert answer["text"].startswith(f"Changes {old} → {new}")
            assert "itdr-show-more" not in all_action_ids(answer["blocks"]), (old, new)
            diff = catalog.diff(old, new)
            text = block_text(answer["blocks"])
            assert all(text.count(f"`{i.name}`") == 1 for i in diff.added + diff.removed), (old, new)

    async def test_default_is_latest_change(self, slack: SlackSim, fake_slack: FakeSlack):
        from catalog import load_catalog

        latest = load_catalog().latest.version
        answer = await ask(slack, fake_slack, "diff")
        assert f"→ {latest}" in answer["text"]

    async def test_unknown_version_is_explained(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "diff v4 v99")
        assert "v99" in answer["text"]
        assert answer["response_type"] == "ephemeral"


class TestHelp:
    async def test_help(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "help")
        assert "/itdr why NAME" in answer["text"]

    async def test_unknown_subcommand_gets_help(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "frobnicate now")
        assert answer["text"].startswith("Unknown sub-command `frobnicate`.")

    async def test_empty_text_gets_help(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "")
        assert "Usage:" in answer["text"]


async def test_a_command_that_mentions_payload_is_still_a_command(slack: SlackSim, fake_slack: FakeSlack):
    # Bolt takes any form body containing the word "payload" for a button click; ours is read as the command it is.
    answer = await ask(slack, fake_slack, "search payload")
    assert answer["text"].startswith(("Search payload", "Nothing in the catalog matches"))


def test_escaped_command_text_reads_as_typed():
    from handlers.router import parse_command

    request, _ = parse_command("check <http://contoso.onmicrosoft.com|contoso.onmicrosoft.com>")
    assert request.args == ("contoso.onmicrosoft.com",)
    request, _ = parse_command("watch contoso.onmicrosoft.com <#C0123ABC|onboarding>")
    assert request.args == ("contoso.onmicrosoft.com", "<#C0123ABC|onboarding>")
    request, _ = parse_command("search R&amp;D &lt;x&gt;")
    assert request.args == ("R&D <x>",)
