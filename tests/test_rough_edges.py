"""The rough edges of a first trial run: help that describes everything, a refusal instead of a throwaway Redis,
settings errors in plain words."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_itdr_help_lists_the_commands_like_the_console_and_dash_dash_help_describes_everything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["help"]) == 0
    listing = capsys.readouterr().out
    for command in ("why NAME", "check TENANT", "consent TENANT", "watch TENANT [#channel]", "fleet", "audit TENANT"):
        assert command in listing
    with pytest.raises(SystemExit):
        main(["--help"])
    described = capsys.readouterr().out
    for word in ("(check)", "consent", "watch", "sweep", "(fix)", "(doctor)", "itdr help"):
        assert word in described, word


def test_audit_without_redis_url_refuses_like_tenants() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "SLACK_", "ITDR_"))}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "audit", "contoso.onmicrosoft.com"], cwd=ROOT,
                            env=env | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "REDIS_URL is not set" in result.stderr and "No consent activity" not in result.stdout


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("itdr_state_secret", "too-short", "ITDR_STATE_SECRET is too short: at least 16 characters"),
        ("itdr_worker_concurrency", "0", "ITDR_WORKER_CONCURRENCY is too small: at least 1"),
    ],
)
def test_settings_errors_are_plain_words(setting: str, value: str, said: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, _env_file=None, **{setting: value})
    assert str(exc.value) == said
    assert "items after validation" not in str(exc.value)


def test_a_skipped_test_says_why_in_the_summary(tmp_path: Path) -> None:
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n\n@pytest.mark.skipif(True, reason='../shared is not beside the checkout')\n"
        "def test_needs_shared():\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p", "no:xdist",
                             "--rootdir", str(tmp_path), str(tmp_path / "test_skips.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert "SKIPPED [1]" in result.stdout and "../shared is not beside the checkout" in result.stdout, result.stdout


def test_counts_agree_with_their_nouns() -> None:
    from catalog import load_catalog
    from catalog.words import counted
    from handlers.blocks.drift import revision_message

    assert [counted(n, "item") for n in (0, 1, 2)] == ["0 items", "1 item", "2 items"]
    assert counted(1, "wave") == "1 wave" and counted(1, "round trip") == "1 round trip"
    catalog = load_catalog()
    message = revision_message(catalog.diff("v5", "v6"), catalog, lacking=1, watched=1)
    assert "1 of 1 watched tenant lacks what it adds" in message.text


def test_one_of_anything_is_singular_in_every_view() -> None:
    import datetime as dt

    from bot.consent.store import AuditRecord
    from bot.drift.fleet import Fleet, Names
    from bot.drift.service import Watching
    from bot.drift.store import WatchedTenant
    from bot.settings import ConfigError, Mode, load_settings
    from handlers.blocks.consent import audit_message
    from handlers.blocks.drift import fleet_message, watching_message

    now = dt.datetime.now(dt.UTC)
    fleet = Fleet(tenants=1, verdicts={"ready": 1}, top_missing=[], blocked=Names(), stale=Names(), unread=Names(),
                  computed_at=now)
    assert fleet_message(fleet).text == "1 watched tenant; blocked: 0."
    tenant = WatchedTenant(id="5f1c2b7e-9a1d-4c3e-8b2f-0d9e8a7c6b51", name="Contoso", added_by="U1", added_at=now)
    row = Watching(tenant=tenant, snapshot=None, broken=None, snoozed_until=None, channel="C0ONE")
    assert watching_message("C0ONE", [row], now).text == "This channel watches 1 tenant."
    with pytest.raises(ConfigError, match="1 entry is not"):
        load_settings(Mode.CONSOLE, _env_file=None, itdr_approvers="U123 nonsense")
    record = AuditRecord(at=now.isoformat(), tenant=tenant.id, request_id="r1", action="requested", actor="U1",
                         detail="")
    assert audit_message(tenant.id, [record]).text.endswith(": 1 entry.")


async def test_a_channel_named_in_watch_is_shown_as_a_channel_mention(
    microsoft: Any, fake_slack: Any, serve_app: Callable[..., Any]
) -> None:
    from tests.fakes.slack_client import SlackSim
    from tests.test_drift_slack import command, tenant
    from tests.test_slack_check import microsoft_settings

    running = serve_app(**microsoft_settings(microsoft))
    slack = SlackSim(running.events_url, fake_slack)
    try:
        _, answer = await command(slack, fake_slack, f"watch {tenant(microsoft).tenant_id} <#C0OTHER|alerts>")
    finally:
        await slack.aclose()
    assert answer is not None
    shown = json.dumps(answer["blocks"])
    assert "<#C0OTHER> now watches Contoso" in shown and "&lt;#C0OTHER&gt;" not in shown
