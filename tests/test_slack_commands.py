"""`/itdr` sub-commands end to end: signed slash commands over real HTTP to the app served by uvicorn,
answers checked where Slack would receive them (the fake's response_url)."""

from __future__ import annotations

import json
import time

from tests.fakes.slack import RESPONSE, FakeSlack
from tests.fakes.slack_client import SlackSim, all_action_ids, find_button


async def ask(slack: SlackSim, fake: FakeSlack, text: str, *, count: int = 1) -> dict:
    """Send `/itdr text`, check the ack (200, empty, < 3 s) and return the answer posted to the response_url."""
    started = time.monotonic()
    response, form = await slack.command(text)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 3, "Slack needs the ack within 3 s"
    assert response.text == "", "the answer goes to the response_url, not into the ack"
    rid = form["response_url"].rsplit("/", 1)[1]
    calls = await fake.wait_for(RESPONSE, count=count)
    mine = [c for c in calls if c.path.endswith(rid)]
    assert mine, "no answer on this command's response_url"
    return mine[-1].args


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

    async def test_typo_offers_did_you_mean_buttons(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "why mail.readwite")
        assert "Did you mean" in answer["text"]
        first = find_button(answer["blocks"], "itdr-ask")
        assert first["text"]["text"] == "Mail.ReadWrite"
        assert json.loads(first["value"]) == {"c": "why", "a": ["Mail.ReadWrite"]}
        assert "itdr-share" not in all_action_ids(answer["blocks"]), "nothing worth sharing in a miss"

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
        for count, (old, new) in enumerate(pairs, start=1):
            answer = await ask(slack, fake_slack, f"diff {old} {new}", count=count)
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
