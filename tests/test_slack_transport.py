"""HTTP transport rules: signatures, replay window, retries, Redis outages, ack timing, errors, settings."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bot.logging import RedactingFilter, register_secrets
from bot.settings import ConfigError, Mode, load_settings
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim
from tests.fakes.slack_fixtures import slack_settings


async def settle(fake: FakeSlack, slack: SlackSim) -> None:
    """Press a button that surely answers through its response_url and wait for the answer, so anything sent
    before it has landed too."""
    response, payload = await slack.click("itdr-ask", '{"c":"help"}')
    assert response.status_code == 200
    await fake.answer_at(payload["response_url"])


class TestSignatures:
    async def test_bad_signature_is_rejected_and_runs_nothing(self, slack: SlackSim, fake_slack: FakeSlack):
        response, _ = await slack.command("why Mail.ReadWrite", secret="not-the-signing-secret")
        assert response.status_code == 401
        assert response.json() == {"error": "invalid request"}
        await settle(fake_slack, slack)
        assert len(fake_slack.responses()) == 1

    async def test_timestamp_older_than_five_minutes_is_rejected(self, slack: SlackSim, fake_slack: FakeSlack):
        response, _ = await slack.command("why Mail.ReadWrite", timestamp=int(time.time()) - 301)
        assert response.status_code == 401
        await settle(fake_slack, slack)
        assert len(fake_slack.responses()) == 1

    async def test_timestamp_within_the_window_is_accepted(self, slack: SlackSim, fake_slack: FakeSlack):
        response, _ = await slack.command("help", timestamp=int(time.time()) - 290)
        assert response.status_code == 200
        assert "Usage:" in response.json()["text"]

    async def test_unsigned_request_is_rejected(self, slack: SlackSim):
        response = await slack.http.post(
            slack.app_url,
            content=b"command=%2Fitdr&text=help",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 401


class TestRetries:
    async def test_retried_command_that_acts_runs_once(self, slack: SlackSim, fake_slack: FakeSlack):
        form = slack.command_body("unwatch contoso.onmicrosoft.com")
        first, _ = await slack.command(form["text"], response_url=form["response_url"], trigger_id=form["trigger_id"])
        retry, _ = await slack.command(
            form["text"], response_url=form["response_url"], trigger_id=form["trigger_id"], retry_num=1
        )
        assert first.status_code == retry.status_code == 200
        assert first.json()["text"] == "This channel does not watch contoso.onmicrosoft.com."
        assert retry.text == "", "the retry is acknowledged and runs nothing"
        await settle(fake_slack, slack)
        assert len(fake_slack.responses()) == 1, "nothing but the settle answer went to a response_url"

    async def test_retried_catalog_question_is_answered_again(self, slack: SlackSim, fake_slack: FakeSlack):
        # The answer rides on the ack and changes nothing: when Slack asks again, the first answer may be lost.
        form = slack.command_body("why Mail.ReadWrite")
        first, _ = await slack.command(form["text"], response_url=form["response_url"], trigger_id=form["trigger_id"])
        retry, _ = await slack.command(
            form["text"], response_url=form["response_url"], trigger_id=form["trigger_id"], retry_num=1
        )
        assert first.json() == retry.json() and first.json()["text"].startswith("Mail.ReadWrite:")


class TestRedisDown:
    async def test_catalog_answers_still_work(self, fake_slack: FakeSlack, serve_app):
        running = serve_app(redis_url="redis://127.0.0.1:1/0")  # nothing listens there
        slack = SlackSim(running.events_url, fake_slack)
        try:
            response, _ = await slack.command("why Mail.ReadWrite")
            assert response.status_code == 200
            assert response.json()["text"].startswith("Mail.ReadWrite:")
            health = await slack.http.get(running.url + "/healthz")
            assert health.json() == {"ok": True, "redis": "down"}
        finally:
            await slack.aclose()


def assert_error_id_logged(text: str, caplog: pytest.LogCaptureFixture) -> None:
    """The user got "Sorry, that did not work (error id X)" and the log has a line naming X."""
    assert text.startswith("Sorry, that did not work (error id ")
    error_id = text.split("error id ")[1].split(")")[0]
    assert any(error_id in record.getMessage() for record in caplog.records)


class TestErrors:
    async def test_listener_failure_becomes_an_ephemeral_error_id(self, fake_slack: FakeSlack, serve_app, caplog):
        from catalog import load_catalog

        class Broken:
            def __getattr__(self, name):
                return getattr(load_catalog(), name)

            def lookup(self, query):
                raise RuntimeError("catalog exploded xoxb-should-not-leak")

        running = serve_app(catalog=Broken())
        slack = SlackSim(running.events_url, fake_slack)
        try:
            with caplog.at_level(logging.ERROR):
                response, _ = await slack.command("why Mail.ReadWrite")
                assert response.status_code == 200
            answer = response.json()
            assert answer["response_type"] == "ephemeral"
            assert_error_id_logged(answer["text"], caplog)
        finally:
            await slack.aclose()

    async def test_a_listener_that_never_acks_does_not_hold_the_request_past_slacks_3_s(
        self, fake_slack: FakeSlack, serve_app, caplog
    ):
        from handlers.acking import acks_first

        async def slow(ack):
            await asyncio.sleep(6)  # Redis or Slack hanging before the ack

        running = serve_app(register=lambda app: app.command("/itdr")(acks_first(slow)))
        slack = SlackSim(running.events_url, fake_slack)
        try:
            started = time.monotonic()
            with caplog.at_level(logging.WARNING):
                await slack.command("help")
            assert time.monotonic() - started < 4.5
            assert any("did not ack within 3 s" in r.getMessage() for r in caplog.records)
        finally:
            await slack.aclose()

    async def test_a_command_that_overruns_slacks_3_s_says_it_is_still_working_then_answers(
        self, fake_slack: FakeSlack, serve_app, monkeypatch
    ):
        from handlers import acking
        from handlers.blocks.answers import notice_message

        monkeypatch.setattr(acking, "ACK_SECONDS", 0.2)  # Slack's 3 s, shortened: the test waits for nothing

        async def slow(ack):
            await asyncio.sleep(0.5)  # a fleet too big to read within the ack
            await ack(**notice_message("Here is the fleet.").to_ack())

        running = serve_app(register=lambda app: app.command("/itdr")(acking.acks_first(slow)))
        slack = SlackSim(running.events_url, fake_slack)
        try:
            response, form = await slack.command("fleet")
            assert response.json()["text"] == acking.STILL_WORKING
            assert "no longer supported" not in response.text
            answer = await fake_slack.answer_at(form["response_url"], within=10)
            assert answer["text"] == "Here is the fleet."
        finally:
            await slack.aclose()

    async def test_healthz(self, slack: SlackSim):
        base = slack.app_url.rsplit("/slack/events", 1)[0]
        health = await slack.http.get(base + "/healthz")
        assert health.status_code == 200
        assert health.json() == {"ok": True, "redis": "up"}


class TestSettings:
    def test_http_mode_needs_the_signing_secret(self, fake_slack, redis_url, redis_prefix):
        with pytest.raises(ConfigError) as exc:
            slack_settings(fake_slack, redis_url, redis_prefix, mode=Mode.HTTP, slack_signing_secret=None)
        assert str(exc.value) == "SLACK_SIGNING_SECRET is not set; it is required for `itdr serve` (HTTP mode)"

    def test_socket_mode_needs_an_app_token(self, fake_slack, redis_url, redis_prefix):
        with pytest.raises(ConfigError) as exc:
            slack_settings(fake_slack, redis_url, redis_prefix, mode=Mode.SOCKET, slack_app_token="xoxb-wrong-kind")
        assert str(exc.value) == "SLACK_APP_TOKEN is malformed: it must be an app-level token starting with 'xapp-'"
        assert "wrong-kind" not in str(exc.value)

    def test_malformed_port_names_the_variable_not_the_value(self, monkeypatch):
        monkeypatch.setenv("PORT", "not-a-port-s3cret")
        with pytest.raises(ConfigError) as exc:
            load_settings()
        assert str(exc.value).startswith("PORT is malformed:")
        assert "s3cret" not in str(exc.value)
        assert "\n" not in str(exc.value)

    def test_cli_prints_one_line(self, monkeypatch, capsys, slack_env):
        from bot.cli_slack import start_main_job

        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-0000-secret-value")
        monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
        monkeypatch.chdir("/")  # no .env
        assert start_main_job() == 2
        err = capsys.readouterr().err
        assert err == "itdr: SLACK_SIGNING_SECRET is not set; it is required for `itdr serve` (HTTP mode)\n"

    def test_secrets_are_redacted_from_logs(self):
        register_secrets(["very-secret-signing-value"])
        record = logging.LogRecord(
            "t", logging.INFO, __file__, 1, "token %s and %s", ("xoxb-1-2-abc", "very-secret-signing-value"), None
        )
        RedactingFilter().filter(record)
        assert "abc" not in record.getMessage() and "very-secret" not in record.getMessage()


async def test_concurrent_commands_each_get_their_answer(slack: SlackSim, fake_slack: FakeSlack):
    results = await asyncio.gather(
        *(slack.command(f"why {n}") for n in ("Mail.ReadWrite", "Exchange Administrator", "AuditLog.Read.All") * 5)
    )
    assert all(r.status_code == 200 for r, _ in results)
    for (response, form), name in zip(results, ("Mail.ReadWrite", "Exchange Administrator", "AuditLog.Read.All") * 5,
                                      strict=True):
        assert response.json()["blocks"][0]["text"]["text"] == name, form["text"]
