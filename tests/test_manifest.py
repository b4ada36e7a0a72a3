"""app_manifest.yml: valid against Slack's published schema, and in agreement with the registered listeners."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import handlers
from bot.app import build_app
from bot.runtime import Runtime
from bot.settings import Mode, load_settings
from handlers import actions, commands, events, views
from handlers.ids import ActionId, SubCommand

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared/slack/manifest.schema.1.0.0.json"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((ROOT / "app_manifest.yml").read_text())


@pytest.fixture
async def registered(redis_url: str, redis_prefix: str) -> set[str]:
    settings = load_settings(Mode.HTTP, _env_file=None, slack_bot_token="xoxb-manifest-test",
                             slack_signing_secret="manifest-test-secret", redis_url=redis_url,
                             redis_prefix=redis_prefix)
    async with Runtime.open(settings, Mode.HTTP) as runtime:
        app = build_app(runtime)
    return {listener.ack_function.__name__ for listener in app._async_listeners}


def test_manifest_matches_slack_schema(manifest: dict):
    if not SCHEMA.exists():
        pytest.skip(f"Slack's manifest schema is not at {SCHEMA} (it lives in ../shared beside the checkout)")
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_every_listener_table_entry_is_registered(registered: set[str]):
    tables = [commands.LISTENERS, actions.LISTENERS, views.LISTENERS, events.LISTENERS]
    expected = {listener.__name__ for table in tables for listener in table.values()}
    assert registered == expected
    assert handlers.register.__module__ == "handlers"


def test_slash_commands_agree(manifest: dict):
    declared = {c["command"] for c in manifest["features"]["slash_commands"]}
    assert declared == {c.value for c in commands.LISTENERS}
    itdr = next(c for c in manifest["features"]["slash_commands"] if c["command"] == "/itdr")
    for sub in SubCommand:
        assert sub.value in itdr["usage_hint"], f"usage hint does not mention `{sub.value}`"


def test_events_and_home_tab_agree(manifest: dict):
    bot_events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert bot_events == {e.value for e in events.LISTENERS}
    assert manifest["features"]["app_home"]["home_tab_enabled"] == ("app_home_opened" in bot_events)


def test_interactivity_agrees(manifest: dict):
    assert manifest["settings"]["interactivity"]["is_enabled"] is bool(actions.LISTENERS or views.LISTENERS)
    assert set(actions.LISTENERS) == set(ActionId), "every action id the builders can emit has a listener"


def test_smallest_scopes_and_socket_mode(manifest: dict):
    # Answers go through the ack, response_url and views.publish (no scope beyond the slash command's); consent
    # cards are posted and updated in the channel (chat:write) and approver groups are resolved (usergroups:read).
    # People are named with <@U…> mentions, which Slack renders itself: users:read is not needed.
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == ["chat:write", "commands", "usergroups:read"]
    assert isinstance(manifest["settings"]["socket_mode_enabled"], bool)
    urls = {
        manifest["settings"]["interactivity"]["request_url"],
        manifest["settings"]["event_subscriptions"]["request_url"],
        *(c["url"] for c in manifest["features"]["slash_commands"]),
    }
    assert {u.rsplit("/", 2)[-2:] == ["slack", "events"] for u in urls} == {True}
