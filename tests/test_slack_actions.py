"""Buttons end to end: share in channel, did-you-mean, "Show more" paging, stale buttons."""

from __future__ import annotations

import json
import re

import pytest

from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim, all_action_ids, find_button
from tests.test_slack_commands import ask


async def click(slack: SlackSim, fake: FakeSlack, button: dict, *, within: float = 15, **kwargs) -> dict:
    """Press `button`; the answer the app posts to the click's response_url."""
    response, payload = await slack.click(button["action_id"], button["value"], block_id=button["block_id"], **kwargs)
    assert response.status_code == 200, response.text
    return await fake.answer_at(payload["response_url"], within=within)


class TestShareInChannel:
    async def test_reposts_the_same_answer_visibly(self, slack: SlackSim, fake_slack: FakeSlack):
        private = await ask(slack, fake_slack, "why Mail.ReadWrite")
        shared = await click(slack, fake_slack, find_button(private["blocks"], "itdr-share"))
        assert shared["response_type"] == "in_channel"
        assert shared["replace_original"] is False
        assert shared["text"] == private["text"]
        assert shared["blocks"][0] == private["blocks"][0]
        assert "Shared by <@U111>" in json.dumps(shared["blocks"])
        assert "itdr-share" not in all_action_ids(shared["blocks"])

    async def test_double_click_shares_once(self, slack: SlackSim, fake_slack: FakeSlack):
        private = await ask(slack, fake_slack, "why Exchange Administrator")
        share = find_button(private["blocks"], "itdr-share")
        await click(slack, fake_slack, share)
        second = await click(slack, fake_slack, share)
        assert second["response_type"] == "ephemeral"
        assert second["text"] == "Already shared in this channel."
        visible = [c for c in fake_slack.responses() if c.args.get("response_type") == "in_channel"]
        assert len(visible) == 1

    async def test_shared_diff_is_the_same_single_message(self, slack: SlackSim, fake_slack: FakeSlack):
        private = await ask(slack, fake_slack, "diff v4 v5")
        shared = await click(slack, fake_slack, find_button(private["blocks"], "itdr-share"))
        assert shared["response_type"] == "in_channel"
        assert shared["text"] == private["text"]
        assert [b for b in shared["blocks"] if b["type"] == "section"] == [
            b for b in private["blocks"] if b["type"] == "section"
        ]
        assert "itdr-show-more" not in all_action_ids(shared["blocks"])

    async def test_shared_page_of_a_paged_diff_keeps_show_more(
        self, slack: SlackSim, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.setattr("handlers.blocks.answers.DIFF_PAGE_CHARS", 1000)  # force the paging fallback
        private = await ask(slack, fake_slack, "diff v1 v6")
        assert "itdr-show-more" in all_action_ids(private["blocks"])
        shared = await click(slack, fake_slack, find_button(private["blocks"], "itdr-share"))
        assert shared["response_type"] == "in_channel"
        assert "itdr-show-more" in all_action_ids(shared["blocks"])


class TestDidYouMean:
    async def test_one_click_answers(self, slack: SlackSim, fake_slack: FakeSlack):
        miss = await ask(slack, fake_slack, "why exchange adminstrator")
        button = find_button(miss["blocks"], "itdr-ask")
        assert button["text"]["text"] == "Exchange Administrator"
        answer = await click(slack, fake_slack, button)
        assert answer["blocks"][0]["text"]["text"] == "Exchange Administrator"
        assert answer["response_type"] == "ephemeral"

    async def test_second_suggestion_has_its_own_action_id(self, slack: SlackSim, fake_slack: FakeSlack):
        miss = await ask(slack, fake_slack, "why mail.readwite")
        suggestions = next(b for b in miss["blocks"] if b["type"] == "actions")["elements"]
        assert len(suggestions) >= 2
        second = suggestions[1] | {"block_id": "itdr-suggestions"}
        answer = await click(slack, fake_slack, second)
        assert answer["blocks"][0]["text"]["text"] == second["text"]["text"]


class TestShowMore:
    """Paging is only the fallback for a diff too big for one message; no revision pair of the document needs it,
    so these tests shrink the page budget to make v1 → v6 page."""

    async def test_pages_cover_every_item_once_in_order(
        self, slack: SlackSim, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
    ):
        from catalog import diff_layout, load_catalog

        monkeypatch.setattr("handlers.blocks.answers.DIFF_PAGE_CHARS", 1000)
        expected = list(diff_layout(load_catalog().diff("v1", "v6")).names)
        page = await ask(slack, fake_slack, "diff v1 v6")
        seen: list[str] = []
        pages = 1
        while True:
            assert len(page["blocks"]) <= 50
            for block in page["blocks"]:
                if block["type"] == "section" and block["text"]["text"].startswith(":heavy_"):
                    seen += [c for c in re.findall(r"`([^`]+)`", block["text"]["text"]) if "*" not in c]
            if "itdr-show-more" not in all_action_ids(page["blocks"]):
                break
            pages += 1
            page = await click(slack, fake_slack, find_button(page["blocks"], "itdr-show-more"))
            assert page["replace_original"] is False, "earlier pages stay readable"
            assert page["blocks"][0]["text"]["text"].startswith(f"Changes v1 → v6 (page {pages} of ")
        assert pages >= 2
        assert seen == expected

    async def test_v4_v5_needs_no_show_more(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await ask(slack, fake_slack, "diff v4 v5")
        assert "itdr-show-more" not in all_action_ids(answer["blocks"])
        assert "Changes v4 → v5 (page" not in answer["text"]


class TestStaleButtons:
    async def test_unreadable_value_gets_a_notice(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await click(
            slack, fake_slack, {"action_id": "itdr-ask", "value": "not json", "block_id": "x"}
        )
        assert answer["text"] == "That button is out of date. Ask again with `/itdr`."

    async def test_unknown_action_is_acked_with_a_notice(self, slack: SlackSim, fake_slack: FakeSlack):
        answer = await click(slack, fake_slack, {"action_id": "itdr-retired", "value": "{}", "block_id": "x"})
        assert "no longer supported" in answer["text"]
