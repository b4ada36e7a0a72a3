"""App Home end to end: app_home_opened → views.publish, Home buttons, and Slack answering 429."""

from __future__ import annotations

import json

from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim, find_button
from tests.test_slack_transport import settle


class TestAppHome:
    async def test_home_tab_publishes_the_catalog_summary(self, slack: SlackSim, fake_slack: FakeSlack):
        from catalog import load_catalog

        latest = load_catalog().latest
        response, _ = await slack.event(slack.home_opened_event(user="U222"))
        assert response.status_code == 200
        (publish,) = await fake_slack.wait_for("views.publish")
        assert publish.args["user_id"] == "U222"
        view = publish.args["view"]
        assert view["type"] == "home"
        assert len(view["blocks"]) <= 100
        text = json.dumps(view["blocks"], ensure_ascii=False)
        assert f"Current revision: *{latest.version}*" in text
        assert "What changed" in text
        assert find_button(view["blocks"], "itdr-home-show", "What changed")

    async def test_messages_tab_publishes_nothing(self, slack: SlackSim, fake_slack: FakeSlack):
        response, _ = await slack.event(slack.home_opened_event(tab="messages"))
        assert response.status_code == 200
        await settle(fake_slack, slack)
        assert fake_slack.calls_to("views.publish") == []

    async def test_home_button_republishes_with_the_answer(self, slack: SlackSim, fake_slack: FakeSlack):
        await slack.event(slack.home_opened_event())
        (first,) = await fake_slack.wait_for("views.publish")
        view = first.args["view"] | {"id": "V111", "hash": "1.0"}
        button = find_button(view["blocks"], "itdr-home-show-1", "All revisions")
        response, _ = await slack.click(button["action_id"], button["value"], block_id=button["block_id"], view=view)
        assert response.status_code == 200
        second = (await fake_slack.wait_for("views.publish", count=2))[1]
        blocks = second.args["view"]["blocks"]
        assert "ITDR permission document revisions" in json.dumps(blocks)
        assert len(blocks) <= 100
        assert "itdr-share" not in json.dumps(blocks), "no channel to share into from Home"

    async def test_slack_429_is_retried_after_retry_after(self, slack: SlackSim, fake_slack: FakeSlack):
        fake_slack.rate_limit("views.publish", retry_after=1)
        await slack.event(slack.home_opened_event())
        calls = await fake_slack.wait_for("views.publish", count=2, ok_only=False, within=10)
        limited, published = calls[0], calls[1]
        assert limited.status == 429 and not limited.ok
        assert published.ok
        assert published.at - limited.at >= 1.0, "Retry-After must be honoured"
        assert len(fake_slack.calls_to("views.publish")) == 2, "published exactly once after the 429"

    async def test_retried_event_publishes_once(self, slack: SlackSim, fake_slack: FakeSlack):
        event = slack.home_opened_event()
        first, _ = await slack.event(event, event_id="Ev0RETRY")
        retry, _ = await slack.event(event, event_id="Ev0RETRY", retry_num=1)
        assert first.status_code == retry.status_code == 200
        await fake_slack.wait_for("views.publish")
        await settle(fake_slack, slack)
        assert len(fake_slack.calls_to("views.publish")) == 1
