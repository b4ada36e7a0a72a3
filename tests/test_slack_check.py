"""`/itdr check TENANT` in Slack, end to end: signed requests to the app served over HTTP, the readiness check
running against the local fake of Microsoft, the report posted to the fake Slack's response_url."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fakes.microsoft import FakeMicrosoft, TenantScenario
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim, find_button
from tests.test_readiness_check import complete_scenario, drop
from tests.test_slack_actions import click
from tests.test_slack_transport import assert_error_id_logged


def microsoft_settings(fake: FakeMicrosoft) -> dict[str, Any]:
    settings = fake.settings()
    return {
        "itdr_client_id": settings.itdr_client_id,
        "itdr_client_secret": settings.itdr_client_secret,
        "itdr_target_app_id": settings.itdr_target_app_id,
        "itdr_authority_host": settings.itdr_authority_host,
        "itdr_graph_url": settings.itdr_graph_url,
        "itdr_exchange_url": settings.itdr_exchange_url,
    }


@pytest.fixture
def checking_slack(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any]
) -> Iterator[SlackSim]:
    running = serve_app(**microsoft_settings(microsoft))
    yield SlackSim(running.events_url, fake_slack)


async def check(slack: SlackSim, fake: FakeSlack, text: str) -> tuple[str, dict]:
    """`/itdr check …`: the ack's text ("Checking…") and the report posted to the response_url."""
    started = time.monotonic()
    response, form = await slack.command(text)
    assert response.status_code == 200 and time.monotonic() - started < 3
    return response.json()["text"], await fake.answer_at(form["response_url"], within=15)


async def refused(slack: SlackSim, text: str) -> dict:
    """`/itdr check …` that cannot run: answered in the ack itself, nothing follows."""
    response, _ = await slack.command(text)
    assert response.status_code == 200
    return response.json()


async def test_a_blocked_tenant_gets_verdict_first_failures_with_fixes_and_explain(
    microsoft: FakeMicrosoft, checking_slack: SlackSim, fake_slack: FakeSlack
) -> None:
    scenario: TenantScenario = microsoft.add_tenant(drop(complete_scenario(), "AuditLog.Read.All"))
    ack, report = await check(checking_slack, fake_slack, f"check {scenario.domains[0]}")
    assert "Checking" in ack
    assert report["response_type"] == "ephemeral"
    blocks = report["blocks"]
    assert blocks[0]["text"]["text"] == ":no_entry: Blocked"
    text = json.dumps(blocks, ensure_ascii=False)
    assert "AuditLog.Read.All" in text and "Log and event ingest" in text and "adminconsent" in text
    explain = find_button(blocks, "itdr-ask", "Explain")
    assert json.loads(explain["value"]) == {"c": "why", "a": ["AuditLog.Read.All"]}
    why = await click(checking_slack, fake_slack, explain)
    assert why["blocks"][0]["text"]["text"] == "AuditLog.Read.All"
    assert report["text"].startswith("Blocked: tenant")


async def test_recheck_replaces_the_report_with_a_fresh_one(
    microsoft: FakeMicrosoft, checking_slack: SlackSim, fake_slack: FakeSlack
) -> None:
    scenario = microsoft.add_tenant(drop(complete_scenario(), "Transport Rules"))
    scenario.org_management_roles = ["Audit Logs", "Mail Recipients", "Organization Configuration", "Role Management"]
    _, report = await check(checking_slack, fake_slack, f"check {scenario.tenant_id}")
    assert report["blocks"][0]["text"]["text"] == ":no_entry: Blocked"
    scenario.org_management_roles.append("Transport Rules")  # the engineer fixed it
    again = await click(checking_slack, fake_slack, find_button(report["blocks"], "itdr-recheck"))
    assert again["replace_original"] is True
    assert again["blocks"][0]["text"]["text"] == ":white_check_mark: Ready"


async def test_a_role_held_until_a_date_is_ready_today_and_says_when_it_ends(
    microsoft: FakeMicrosoft, checking_slack: SlackSim, fake_slack: FakeSlack
) -> None:
    scenario = complete_scenario()
    end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=5)
    scenario.time_bound("194ae4cb-b126-40b2-bd5b-6091b380977d", end)  # Security Administrator
    microsoft.add_tenant(scenario)
    _, first = await check(checking_slack, fake_slack, f"check {scenario.domains[0]}")
    assert "Roles that end" not in json.dumps(first["blocks"]), "a first check reads ends only with a second wave"
    report = await click(checking_slack, fake_slack, find_button(first["blocks"], "itdr-recheck"))
    blocks = report["blocks"]
    assert blocks[0]["text"]["text"] == ":white_check_mark: Ready"
    ending = next(b["text"]["text"] for b in blocks if "Roles that end" in b.get("text", {}).get("text", ""))
    assert f"`Security Administrator`: held until {end:%Y-%m-%d %H:%M} UTC" in ending
    assert f"`/itdr fix {scenario.domains[0]}`" in ending


async def test_share_posts_the_cached_report_visibly(
    microsoft: FakeMicrosoft, checking_slack: SlackSim, fake_slack: FakeSlack
) -> None:
    scenario = microsoft.add_tenant(complete_scenario())
    _, report = await check(checking_slack, fake_slack, f"check {scenario.tenant_id}")
    before = microsoft.round_trips()
    shared = await click(checking_slack, fake_slack, find_button(report["blocks"], "itdr-share"))
    assert shared["response_type"] == "in_channel"
    assert shared["blocks"][0]["text"]["text"] == ":white_check_mark: Ready"
    assert "Shared by" in json.dumps(shared["blocks"])
    assert microsoft.round_trips() == before  # served from the Redis cache, Microsoft not asked again


async def test_a_tenant_without_the_app_lists_everything_within_slack_limits(
    microsoft: FakeMicrosoft, checking_slack: SlackSim, fake_slack: FakeSlack
) -> None:
    scenario = microsoft.add_tenant(complete_scenario(sp_exists=False))
    _, report = await check(checking_slack, fake_slack, f"check {scenario.tenant_id}")
    blocks = report["blocks"]
    assert len(blocks) <= 50
    text = json.dumps(blocks, ensure_ascii=False)
    assert "Microsoft Graph permissions — missing, needed today" in text
    for name in ("Mail.ReadWrite", "User.Read.All", "Security Administrator"):
        assert name in text  # grouped, never dropped


async def test_bad_tenant_input_gets_a_friendly_answer_and_no_request(
    microsoft: FakeMicrosoft, checking_slack: SlackSim, fake_slack: FakeSlack
) -> None:
    before = microsoft.round_trips()
    answer = await refused(checking_slack, "check contoso.com'/../x")
    assert "doesn't look like a Microsoft 365 tenant" in answer["text"]
    assert "contoso.com'/../x" not in json.dumps(answer)  # the input is not echoed back
    assert microsoft.round_trips() == before


async def test_check_without_microsoft_settings_explains_the_setup(slack: SlackSim, fake_slack: FakeSlack) -> None:
    answer = await refused(slack, "check contoso.onmicrosoft.com")
    assert "not configured" in answer["text"]


async def test_ack_within_3s_while_a_slow_microsoft_keeps_the_check_going(
    microsoft: FakeMicrosoft, checking_slack: SlackSim, fake_slack: FakeSlack
) -> None:
    scenario = microsoft.add_tenant(complete_scenario())
    microsoft.latency = 1.2  # every Microsoft request: a check now needs several seconds
    try:
        started = time.monotonic()
        response, form = await checking_slack.command(f"check {scenario.tenant_id}")
        acked = time.monotonic() - started
        assert response.status_code == 200 and "Checking" in response.json()["text"]
        assert acked < 1.0, f"ack took {acked:.2f}s"
        report = await fake_slack.answer_at(form["response_url"], within=30)
        assert time.monotonic() - started >= 3.0, "the check kept going after the ack"
        assert report["blocks"][0]["text"]["text"] == ":white_check_mark: Ready"
    finally:
        microsoft.latency = 0.0


async def test_a_check_failing_after_its_ack_answers_with_an_error_id(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    from bot.runtime import _build_readiness

    def exploding(*args: Any) -> Any:
        service = _build_readiness(*args)

        async def run(*_: Any, **__: Any) -> Any:
            raise RuntimeError("graph exploded")

        service.run = run  # type: ignore[union-attr]
        return service

    running = serve_app(readiness=exploding, **microsoft_settings(microsoft))
    slack = SlackSim(running.events_url, fake_slack)
    scenario = microsoft.add_tenant(complete_scenario())
    try:
        with caplog.at_level(logging.ERROR):
            response, form = await slack.command(f"check {scenario.tenant_id}")
            assert "Checking" in response.json()["text"]
            answer = await fake_slack.answer_at(form["response_url"], within=15)
        assert_error_id_logged(answer["text"], caplog)
    finally:
        await slack.aclose()


async def test_a_check_under_way_when_the_server_stops_still_answers(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any]
) -> None:
    running = serve_app(**microsoft_settings(microsoft))
    slack = SlackSim(running.events_url, fake_slack)
    scenario = microsoft.add_tenant(complete_scenario())
    microsoft.latency = 0.8  # a check of a few seconds
    try:
        response, form = await slack.command(f"check {scenario.tenant_id}")
        assert "Checking" in response.json()["text"]
        await asyncio.to_thread(running.stop)  # a deploy: SIGTERM while the check runs
        report = await fake_slack.answer_at(form["response_url"], within=15)
        assert report["blocks"][0]["text"]["text"] == ":white_check_mark: Ready"
    finally:
        microsoft.latency = 0.0
        await slack.aclose()
