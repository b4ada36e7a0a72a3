"""The rough edges of a first trial run: help that describes everything, a refusal instead of a throwaway Redis,
settings errors in plain words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
