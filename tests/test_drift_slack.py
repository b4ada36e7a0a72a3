"""Watching tenants from Slack and the buttons of a drift message, over signed HTTP to the served app; and the
fleet commands of the CLI, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.drift.model import ChangeKind
from bot.drift.store import DriftStore
from bot.store import RedisConnections
from catalog import load_catalog
from handlers.blocks.drift import drift_message
from tests.fakes.microsoft import GRAPH_APP_ID, FakeMicrosoft, TenantScenario
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim, find_button
from tests.test_drift import Fleet, running_worker, worker_settings
from tests.test_readiness_check import complete_scenario
from tests.test_slack_check import microsoft_settings

ROOT = Path(__file__).resolve().parents[1]
catalog = load_catalog()


@pytest.fixture
def slack(microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any]) -> SlackSim:
    running = serve_app(**microsoft_settings(microsoft))
    return SlackSim(running.events_url, fake_slack)


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> Any:
    redis = RedisConnections(redis_url, redis_prefix)
    yield DriftStore(redis.state)
    await redis.aclose()


def tenant(microsoft: FakeMicrosoft, name: str = "Contoso", version: str = "v6") -> TenantScenario:
    scenario = complete_scenario(version)
    scenario.display_name = name
    return microsoft.add_tenant(scenario)


async def command(slack: SlackSim, fake: FakeSlack, text: str) -> tuple[str, dict[str, Any] | None]:
    """`/itdr text`: the ack's text, and the answer that follows it (None when the ack was the answer)."""
    response, form = await slack.command(text)
    assert response.status_code == 200
    ack = response.json()["text"]
    if "Checking" not in ack:
        return ack, None
    return ack, await fake.answer_at(form["response_url"], within=20)


async def test_watch_answers_with_the_verdict_and_says_so_in_the_channel(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft, store: DriftStore
) -> None:
    scenario = tenant(microsoft, "Contoso")
    _, answer = await command(slack, fake_slack, f"watch {scenario.domains[0]}")
    assert answer is not None and answer["text"] == "This channel now watches Contoso: its verdict is ready."
    (posted,) = fake_slack.calls_to("chat.postMessage")
    assert posted.args["channel"] == "C111" and "watch *Contoso* here" in json.dumps(posted.args["blocks"])
    assert await store.channels_of(scenario.tenant_id) == ["C111"]
    assert (await store.snapshot(scenario.tenant_id)) is not None, "the first snapshot is the baseline"

    _, other = await command(slack, fake_slack, f"watch {scenario.tenant_id} <#C0OTHER|alerts>")
    assert other is not None and "<#C0OTHER> now watches Contoso" in other["text"]
    assert await store.channels_of(scenario.tenant_id) == ["C0OTHER", "C111"]

    listing, _ = await command(slack, fake_slack, "watching")
    assert listing == "This channel watches 1 tenant."
    fleet, _ = await command(slack, fake_slack, "fleet")
    assert fleet.startswith("1 watched tenant; blocked: 0.")

    gone, _ = await command(slack, fake_slack, f"unwatch {scenario.domains[0]}")
    assert gone == "This channel no longer watches Contoso."
    assert await store.channels_of(scenario.tenant_id) == ["C0OTHER"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("watch contoso.com'/../x", "doesn't look like a Microsoft 365 tenant"),
        ("watch nobody-here.onmicrosoft.com", "Microsoft doesn't know the tenant"),
        ("watch 3f2c8a63-2a1b-4c2e-9f64-2b9f0c6c1a11 #general", "Name the channel as Slack links it"),
    ],
)
async def test_watch_refuses_bad_input_and_stores_nothing(
    slack: SlackSim, fake_slack: FakeSlack, store: DriftStore, text: str, expected: str
) -> None:
    ack, answer = await command(slack, fake_slack, text)
    assert expected in (answer or {}).get("text", ack)
    assert await store.tenant_ids() == []
    assert fake_slack.calls_to("chat.postMessage") == []


async def test_watching_a_channel_the_bot_is_not_in_says_how_to_invite_it(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft, store: DriftStore
) -> None:
    fake_slack.fail("chat.postMessage", error="not_in_channel")
    _, answer = await command(slack, fake_slack, f"watch {tenant(microsoft).tenant_id}")
    assert answer is not None and "/invite @itdr" in answer["text"] and "Nothing is watched yet" in answer["text"]
    assert await store.tenant_ids() == []


async def drift_card(slack: SlackSim, fake: FakeSlack, microsoft: FakeMicrosoft, store: DriftStore,
                     name: str) -> tuple[TenantScenario, dict[str, Any], str]:
    """A watched tenant that drifted, and its drift message as the channel received it (posted through Slack)."""
    scenario = tenant(microsoft, name)
    await command(slack, fake, f"watch {scenario.tenant_id}")
    scenario.revoke(GRAPH_APP_ID, "AuditLog.Read.All")
    settings = microsoft_settings(microsoft)
    from bot.drift.service import DriftService
    from bot.microsoft.http import Priority
    from bot.readiness.service import ReadinessService
    from bot.settings import load_settings

    readiness = ReadinessService(load_settings(_env_file=None, **settings), catalog)
    try:
        drift = DriftService(catalog, store, readiness)
        report = await drift.check(scenario.tenant_id, priority=Priority.HIGH)
        recorded = await drift.record(scenario.tenant_id, report, now=datetime.now(UTC), sweep=None)
    finally:
        await readiness.aclose()
    assert recorded is not None and recorded.change.kind is ChangeKind.changed
    change = recorded.change
    message = drift_message(change, catalog)
    return scenario, {"text": message.text, "blocks": message.blocks}, "1700000000.000200"


async def click(slack: SlackSim, fake: FakeSlack, message: dict[str, Any], ts: str, action: str,
                **kwargs: Any) -> dict[str, Any]:
    button = find_button(message["blocks"], action)
    payload = slack.action_payload(action, button["value"], block_id=button["block_id"],
                                   container={"type": "message", "message_ts": ts, "channel_id": "C111"}, **kwargs)
    payload["message"] = message | {"ts": ts}
    from urllib.parse import urlencode

    response = await slack.post(urlencode({"payload": json.dumps(payload)}),
                                content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    return payload


async def test_acknowledge_asks_why_and_the_message_shows_who(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft, store: DriftStore
) -> None:
    scenario, message, ts = await drift_card(slack, fake_slack, microsoft, store, "Acked")
    await click(slack, fake_slack, message, ts, "drift-ack")
    (opened,) = await fake_slack.wait_for("views.open")
    dialog = opened.args["view"]
    empty, _ = await slack.submit(dialog, {"drift-ack-reason": {"reason": {"type": "plain_text_input",
                                                                           "value": " "}}})
    assert empty.json()["response_action"] == "errors"
    done, _ = await slack.submit(dialog, {"drift-ack-reason": {"reason": {
        "type": "plain_text_input", "value": "Customer removed it on purpose; Huntress told"}}})
    assert done.status_code == 200
    (update,) = await fake_slack.wait_for("chat.update")
    blocks = json.dumps(update.args["blocks"])
    assert "Acknowledged by <@U111>" in blocks and "removed it on purpose" in blocks
    assert "AuditLog.Read.All" in blocks, "the drift itself stays readable"
    assert "drift-ack" not in blocks, "its buttons are gone"
    snapshot = await store.snapshot(scenario.tenant_id)
    assert snapshot is not None and (acked := snapshot.acknowledged_in("C111")) is not None
    assert "graph.AuditLog.Read.All" in acked.items


async def test_snooze_and_recheck(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft, store: DriftStore
) -> None:
    scenario, message, ts = await drift_card(slack, fake_slack, microsoft, store, "Snoozy")
    payload = await click(slack, fake_slack, message, ts, "drift-recheck")
    again = await fake_slack.answer_at(payload["response_url"], within=20)
    assert again["text"] == "Checked again: nothing changed. The verdict is blocked."
    await click(slack, fake_slack, message, ts, "drift-snooze")
    (update,) = await fake_slack.wait_for("chat.update")
    assert "Snoozed here by <@U111> until" in json.dumps(update.args["blocks"])
    assert scenario.tenant_id in await store.snoozed_of("C111", [scenario.tenant_id])


async def test_buttons_for_a_tenant_the_channel_does_not_watch_are_refused(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft, store: DriftStore
) -> None:
    _, message, _ = await drift_card(slack, fake_slack, microsoft, store, "Elsewhere")
    button = find_button(message["blocks"], "drift-snooze")
    _, payload = await slack.click("drift-snooze", button["value"], block_id=button["block_id"], channel="C0NOTHERE")
    refusal = await fake_slack.answer_at(payload["response_url"])
    assert refusal["text"] == "This channel does not watch that tenant (any more)."


# ----------------
#  the CLI
# ----------------


def itdr(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ITDR_", "REDIS_"))}
    return subprocess.run([sys.executable, "-m", "bot.cli", *argv], env=base | {"PYTHONPATH": str(ROOT)} | env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_tenants_import_reports_bad_rows_by_line_and_imports_the_good(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    csv_file = tmp_path / "tenants.csv"
    csv_file.write_text(
        "tenant,channel\n"
        "3f2c8a63-2a1b-4c2e-9f64-2b9f0c6c1a11,C0FIRST\n"
        "contoso.onmicrosoft.com,C0FIRST\n"
        "not a tenant,C0FIRST\n"
        "\n"
        "fabrikam.onmicrosoft.com,#general\n"
        "fabrikam.onmicrosoft.com\n"
        "fabrikam.onmicrosoft.com,C0SECOND\n"
    )
    env = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    result = itdr("tenants", "import", str(csv_file), env=env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"{csv_file}: line 4: 'not a tenant' is not a tenant id or domain",
        f"{csv_file}: line 6: '#general' is not a Slack channel id (C…)",
        f"{csv_file}: line 7: expected `tenant,channel`",
    ]
    assert result.stdout.strip() == "Imported 3 rows (3 new subscriptions); 3 bad rows skipped."
    listed = json.loads(itdr("tenants", "--json", env=env).stdout)
    assert sorted((row["tenant"], tuple(row["channels"])) for row in listed) == [
        ("3f2c8a63-2a1b-4c2e-9f64-2b9f0c6c1a11", ("C0FIRST",)),
        ("contoso.onmicrosoft.com", ("C0FIRST",)),
        ("fabrikam.onmicrosoft.com", ("C0SECOND",)),
    ]


def test_a_sweep_of_no_tenant_ends_at_once_without_a_worker(redis_url: str, redis_prefix: str) -> None:
    env = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    result = itdr("sweep", "--wait", "--json", "--timeout", "5", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"tenants": 0, "checked": 0, "changed": 0, "notified": 0, "unknown": 0,
                                         "duration_ms": 0}
    result = itdr("sweep", env=env)
    assert result.stdout.startswith("No tenant is watched: nothing to sweep.")


def test_one_imported_row_is_said_in_the_singular(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    csv_file = tmp_path / "one.csv"
    csv_file.write_text("tenant,channel\ncontoso.onmicrosoft.com,C0FIRST\n")
    result = itdr("tenants", "import", str(csv_file), env={"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix})
    assert result.stdout.strip() == "Imported 1 row (1 new subscription); 0 bad rows skipped."


def test_sweep_with_redis_down_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = itdr("sweep", "--wait", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert result.stderr.startswith("itdr: Redis is unreachable, so") and result.stderr.count("\n") == 1


async def test_itdr_sweep_wait_json_reports_the_sweep(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    settings = worker_settings(microsoft, fake_slack, redis_url, redis_prefix)
    async with running_worker(settings, microsoft, fake_slack) as fleet:
        scenario = Fleet.tenant(fleet, name="Swept")
        await fleet.watch(scenario, "C0SWEPT")
        scenario.revoke(GRAPH_APP_ID, "AuditLog.Read.All")
        env = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "ITDR_SWEEP_SPREAD_SECONDS": "0"}
        result = await asyncio.to_thread(itdr, "sweep", "--wait", "--json", env=env)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert {k: data[k] for k in ("tenants", "checked", "changed", "notified", "unknown")} == {
            "tenants": 1, "checked": 1, "changed": 1, "notified": 1, "unknown": 0}
        assert data["duration_ms"] >= 0
        await fleet.settled()
        (message,) = fleet.posts("C0SWEPT")
        assert message["text"].startswith("Drift: Swept")


async def test_the_home_tab_shows_the_fleet(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft, store: DriftStore
) -> None:
    await command(slack, fake_slack, f"watch {tenant(microsoft, 'Homely').tenant_id}")
    await slack.event(slack.home_opened_event())
    (publish,) = await fake_slack.wait_for("views.publish")
    text = json.dumps(publish.args["view"]["blocks"], ensure_ascii=False)
    assert "ITDR fleet" in text and "*1 watched tenant*" in text and "Ready 1" in text
