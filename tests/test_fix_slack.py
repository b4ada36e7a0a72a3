"""`/itdr fix` in Slack over signed HTTP to the served app, its buttons, and the re-check after the wait run by a
real SAQ worker: scheduled at the plan's longest wait, surviving a worker restart, updating the plan message in
place and replying in its thread; a newer plan for the same tenant and channel supersedes the older re-check."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from saq.job import Status

from bot.drift.sweep import queue_for
from bot.readiness.fix_service import FixService
from bot.settings import Settings
from bot.store import RedisConnections
from catalog import load_catalog
from tests.fakes.microsoft import GRAPH_APP_ID, FakeMicrosoft, TenantScenario
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim, find_button
from tests.test_drift import running_worker, worker_settings
from tests.test_readiness_check import complete_scenario, drop
from tests.test_slack_check import microsoft_settings

catalog = load_catalog()


@pytest.fixture
async def slack(microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any]
                ) -> AsyncIterator[SlackSim]:
    running = serve_app(**microsoft_settings(microsoft))
    sim = SlackSim(running.events_url, fake_slack)
    try:
        yield sim
    finally:
        await sim.aclose()


@pytest.fixture
def settings(microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> Settings:
    return worker_settings(microsoft, fake_slack, redis_url, redis_prefix)


@pytest.fixture
async def fixes(settings: Settings, redis_url: str, redis_prefix: str) -> AsyncIterator[FixService]:
    redis = RedisConnections(redis_url, redis_prefix)
    yield FixService(None, redis.state, queue_for(redis, settings), job_timeout=60)
    await redis.aclose()


def broken_tenant(microsoft: FakeMicrosoft, name: str) -> TenantScenario:
    scenario = drop(complete_scenario(audit_log_ingestion=False), "Exchange Administrator")
    scenario.display_name = name
    return microsoft.add_tenant(scenario)


async def post_plan(slack: SlackSim, fake: FakeSlack, tenant: str, count: int = 1) -> tuple[dict[str, Any], str]:
    """`/itdr fix TENANT`: the plan message as the channel received it, and its ts."""
    response, _ = await slack.command(f"fix {tenant}")
    assert response.status_code == 200 and "Planning the fixes" in response.json()["text"]
    posted = (await fake.wait_for("chat.postMessage", count=count, within=20))[-1]
    assert posted.args["channel"] == "C111"
    return {"text": posted.args["text"], "blocks": posted.args["blocks"]}, str(posted.response["ts"])


async def click(slack: SlackSim, message: dict[str, Any], ts: str, action: str, user: str = "U111") -> dict[str, Any]:
    button = find_button(message["blocks"], action)
    payload = slack.action_payload(action, button["value"], block_id=button["block_id"], user=user,
                                   container={"type": "message", "message_ts": ts, "channel_id": "C111"})
    payload["message"] = message | {"ts": ts}
    response = await slack.post(urlencode({"payload": json.dumps(payload)}),
                                content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    return payload


async def test_fix_posts_the_plan_and_re_check_now_marks_each_step(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft
) -> None:
    scenario = broken_tenant(microsoft, "Plannable")
    message, ts = await post_plan(slack, fake_slack, scenario.domains[0])
    blocks = json.dumps(message["blocks"])
    assert "Assign the missing Entra roles" in blocks and "Turn on unified audit log ingestion" in blocks
    assert scenario.sp_id in blocks and "29232cdf-9323-42fd-ade2-1d097af3e4de" in blocks
    assert "Re-check after the wait (60 min)" in blocks

    scenario.audit_log_ingestion = True  # the admin did step 2, not step 1
    payload = await click(slack, message, ts, "fix-recheck")
    (update,) = await fake_slack.wait_for("chat.update", within=20)
    assert update.args["ts"] == ts
    sections = [b["text"]["text"] for b in update.args["blocks"] if b["type"] == "section"]
    assert sections[0].startswith(":x: *1. Assign the missing Entra roles")
    assert sections[1].startswith(":white_check_mark: *2. Turn on unified audit log ingestion")
    reply = (await fake_slack.wait_for("chat.postMessage", count=2))[-1]
    assert reply.args["thread_ts"] == ts and "<@U111>" in reply.args["text"] and "1 of 2 steps" in reply.args["text"]
    assert payload["user"]["id"] == "U111"


async def test_fix_answers_bad_input_ready_and_unknown_tenants_privately(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft
) -> None:
    response, _ = await slack.command("fix contoso.com'/../x")
    assert "doesn't look like a Microsoft 365 tenant" in response.json()["text"]
    ready = microsoft.add_tenant(complete_scenario())
    _, form = await slack.command(f"fix {ready.tenant_id} v5")
    answer = await fake_slack.answer_at(form["response_url"], within=20)
    assert answer["text"] == f":white_check_mark: Nothing to fix: {ready.domains[0]} grants everything v5 asks for."
    _, form = await slack.command("fix nobody-here.onmicrosoft.com")
    answer = await fake_slack.answer_at(form["response_url"], within=20)
    assert answer["text"].startswith(":grey_question: Could not check `nobody-here.onmicrosoft.com`:")
    assert fake_slack.calls_to("chat.postMessage") == []


async def until(read: Callable[[], Any], done: Callable[[Any], bool], within: float = 10.0) -> Any:
    """What `read` returns once `done` says so (the listener records after Slack has the message)."""
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def _due_now(settings: Settings, fixes: FixService, key: str) -> None:
    """The wait has passed: the scheduled job's time is moved to now (what SAQ's schedule reads)."""
    queue = fixes.queue
    job = await queue.job(key)
    assert job is not None
    await queue.redis.zadd(queue.namespace("incomplete"), {job.id: int(time.time())})  # type: ignore[attr-defined]


async def test_re_check_after_the_wait_runs_on_a_restarted_worker_and_supersedes_older_plans(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft, settings: Settings, fixes: FixService
) -> None:
    scenario = broken_tenant(microsoft, "Waiting")
    message, ts = await post_plan(slack, fake_slack, scenario.tenant_id)
    async with running_worker(settings, microsoft, fake_slack):
        before = datetime.now(UTC).timestamp()
        payload = await click(slack, message, ts, "fix-recheck-later")
        told = await fake_slack.answer_at(payload["response_url"], within=20)
        assert "I will re-check" in told["text"]
        key = FixService.job_key(scenario.tenant_id, "C111", ts)
        job = await fixes.queue.job(key)
        assert job is not None and job.status is Status.QUEUED
        assert before + 59 * 60 <= job.scheduled <= datetime.now(UTC).timestamp() + 61 * 60  # Microsoft's 60 min
        (shown,) = await fake_slack.wait_for("chat.update")
        assert "Re-check after the wait scheduled" in json.dumps(shown.args["blocks"])

    # A newer plan for the same tenant in the same channel: the older pending re-check is aborted, one job left.
    newer, newer_ts = await post_plan(slack, fake_slack, scenario.tenant_id, count=2)
    old = await until(lambda: fixes.queue.job(key), lambda job: job is None or job.status is not Status.QUEUED)
    assert old is not None and old.status in (Status.ABORTING, Status.ABORTED)
    await click(slack, newer, newer_ts, "fix-recheck-later")
    newer_key = FixService.job_key(scenario.tenant_id, "C111", newer_ts)
    await fake_slack.wait_for("chat.update", count=2, within=20)
    assert await fixes.pending(scenario.tenant_id, "C111") == newer_key

    # The admin fixes everything; a worker started after the scheduling runs the re-check once it is due.
    scenario.audit_log_ingestion = True
    scenario.directory_roles.append("29232cdf-9323-42fd-ade2-1d097af3e4de")
    await _due_now(settings, fixes, newer_key)
    async with running_worker(settings, microsoft, fake_slack):
        updates = await fake_slack.wait_for("chat.update", count=3, within=30)
        replies = [c for c in await fake_slack.wait_for("chat.postMessage", count=3, within=30)
                   if c.args.get("thread_ts")]
        pending = await until(lambda: fixes.pending(scenario.tenant_id, "C111"), lambda key: key is None)
    update = updates[-1]
    assert update.args["ts"] == newer_ts
    sections = [b["text"]["text"] for b in update.args["blocks"] if b["type"] == "section"]
    assert all(text.startswith(":white_check_mark:") for text in sections)
    (reply,) = replies
    assert reply.args["thread_ts"] == newer_ts and "after Microsoft's wait, as <@U111> asked: 2 of 2" in \
        reply.args["text"]
    assert [u.args["ts"] for u in updates].count(ts) == 1, "the superseded plan's message is not touched again"
    assert pending is None, "the re-check ran to its end: nothing is pending any more"


async def test_consent_verified_through_the_workflow_marks_the_plans_consent_step(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    from bot.consent.model import ConsentState
    from bot.worker import poll_consents
    from handlers.blocks.fix import plan_message
    from handlers.cards import post_card

    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix, itdr_approvers="U222",
                              itdr_state_secret="fix-test-state-secret-0123")
    async with running_worker(settings, microsoft, fake_slack) as fleet:
        scenario = microsoft.add_tenant(complete_scenario("v5"))  # lacks what v6 adds: consent is step 1
        runtime = fleet.runtime
        readiness = runtime.readiness
        assert readiness is not None
        check = readiness.request(scenario.tenant_id)
        _, plan = await runtime.fixes.plan(check)
        assert [s.id for s in plan.steps] == ["consent"]
        message = plan_message(plan)
        posted = await runtime.slack.chat_postMessage(channel="C0PLAN", text=message.text, blocks=message.blocks)
        await runtime.fixes.posted(plan, "C0PLAN", str(posted["ts"]))

        consent = runtime.consent
        prepared = await consent.prepare(check, "U111", "C0PLAN")
        assert prepared.request is not None and await consent.reserve(prepared.request) is None
        request = await consent.publish(prepared.request, await post_card(runtime.slack, consent, prepared.request))
        assert (await consent.approve(request.id, "U222")).request.state is ConsentState.approved
        full = complete_scenario("v6")
        scenario.app_role_assignments, scenario.directory_roles = full.app_role_assignments, full.directory_roles
        assert await poll_consents({"runtime": runtime}) == 1
    updates = {call.args["ts"]: call for call in fake_slack.calls_to("chat.update")}
    plan_update = updates[str(posted["ts"])]
    (step,) = [b["text"]["text"] for b in plan_update.args["blocks"] if b["type"] == "section"]
    assert step.startswith(":white_check_mark: *1. Grant admin consent")
    assert "fix-consent" not in json.dumps(plan_update.args["blocks"]), "no Start consent once it is done"


async def test_re_check_now_never_marks_steps_from_a_failed_read(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft
) -> None:
    scenario = broken_tenant(microsoft, "Flaky")
    message, ts = await post_plan(slack, fake_slack, scenario.tenant_id)
    microsoft.fail(r"\$batch", status=503, times=None)
    try:
        payload = await click(slack, message, ts, "fix-recheck")
        answer = await fake_slack.answer_at(payload["response_url"], within=30)
    finally:
        microsoft.clear()
    assert answer["text"].startswith("Could not re-check")
    assert fake_slack.calls_to("chat.update") == []


async def test_start_consent_on_a_plan_opens_the_consent_workflows_card(
    fake_slack: FakeSlack, microsoft: FakeMicrosoft, serve_app: Callable[..., Any]
) -> None:
    running = serve_app(**microsoft_settings(microsoft), itdr_approvers="U222",
                              itdr_state_secret="fix-test-state-secret-0123")
    slack = SlackSim(running.events_url, fake_slack)
    try:
        scenario = microsoft.add_tenant(drop(complete_scenario(), "AuditLog.Read.All"))
        message, ts = await post_plan(slack, fake_slack, scenario.tenant_id)
        assert "Start consent" in json.dumps(message["blocks"])
        payload = await click(slack, message, ts, "fix-consent")
        answer = await fake_slack.answer_at(payload["response_url"], within=20)
        assert answer["text"].startswith("Posted the consent request")
        card = (await fake_slack.wait_for("chat.postMessage", count=2))[-1]
        assert card.args["channel"] == "C111" and "consent-approve" in json.dumps(card.args["blocks"])

        # Approved, the admin grants it, and Verify now proves it: the plan's consent step is done too.
        card_ts = str(card.response["ts"])
        await click(slack, card.args, card_ts, "consent-approve", user="U222")
        approved = (await fake_slack.wait_for("chat.update", count=1, within=20))[-1].args
        scenario.grant_all(GRAPH_APP_ID, "AuditLog.Read.All")
        await click(slack, approved, card_ts, "consent-verify", user="U222")
        deadline = time.monotonic() + 20
        while not (plan_updates := [c for c in fake_slack.calls_to("chat.update") if c.args["ts"] == ts]):
            assert time.monotonic() < deadline, "the plan message was never updated"
            await asyncio.sleep(0.1)
        steps = [b["text"]["text"] for b in plan_updates[-1].args["blocks"] if b["type"] == "section"]
        assert steps and all(step.startswith(":white_check_mark:") for step in steps), steps
    finally:
        await slack.aclose()
