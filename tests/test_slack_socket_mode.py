"""Socket Mode end to end: apps.connections.open on the fake, a real WebSocket, envelopes and acks."""

from __future__ import annotations

import asyncio
import contextlib

from bot.socket_mode import run_socket_mode
from tests.fakes.slack import RESPONSE, FakeSlack
from tests.fakes.slack_client import SlackSim
from tests.fakes.slack_fixtures import slack_settings


@contextlib.asynccontextmanager
async def socket_app(fake: FakeSlack, redis_url: str, redis_prefix: str):
    settings = slack_settings(fake, redis_url, redis_prefix, slack_signing_secret=None)
    stop = asyncio.Event()
    task = asyncio.create_task(run_socket_mode(settings, stop=stop))
    try:
        await fake.socket_connected(within=10)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_slash_command_envelope_is_acked_and_answered(fake_slack: FakeSlack, redis_url, redis_prefix):
    sim = SlackSim("unused", fake_slack)
    async with socket_app(fake_slack, redis_url, redis_prefix):
        (opened,) = fake_slack.calls_to("apps.connections.open")
        assert opened.headers["Authorization"] == f"Bearer {fake_slack.app_token}"
        envelope_id = await fake_slack.push_envelope("slash_commands", sim.command_body("why Mail.ReadWrite"))
        ack = await fake_slack.socket_ack(envelope_id, within=3)
        assert ack["envelope_id"] == envelope_id
        answer = ack["payload"]  # the answer rides on the ack, as in HTTP mode
        assert answer["text"].startswith("Mail.ReadWrite:")
        assert answer["response_type"] == "ephemeral"
    await sim.aclose()


async def test_retried_event_envelope_is_acked_but_runs_once(fake_slack: FakeSlack, redis_url, redis_prefix):
    sim = SlackSim("unused", fake_slack)
    body = sim.event_body(sim.home_opened_event(), event_id="Ev0SOCKET")
    async with socket_app(fake_slack, redis_url, redis_prefix):
        first = await fake_slack.push_envelope("events_api", body)
        await fake_slack.socket_ack(first)
        await fake_slack.wait_for("views.publish")
        retry = await fake_slack.push_envelope("events_api", body, retry_attempt=1, retry_reason="timeout")
        await fake_slack.socket_ack(retry)
        barrier = await fake_slack.push_envelope("interactive", sim.action_payload("itdr-ask", '{"c":"help"}'))
        await fake_slack.socket_ack(barrier)
        await fake_slack.wait_for(RESPONSE)  # handled after the retry was: the retry ran nothing
        assert len(fake_slack.calls_to("views.publish")) == 1
    await sim.aclose()


async def test_button_envelope(fake_slack: FakeSlack, redis_url, redis_prefix):
    sim = SlackSim("unused", fake_slack)
    async with socket_app(fake_slack, redis_url, redis_prefix):
        payload = sim.action_payload(
            "itdr-ask", '{"c":"why","a":["Exchange Administrator"]}', block_id="itdr-suggestions"
        )
        envelope_id = await fake_slack.push_envelope("interactive", payload)
        await fake_slack.socket_ack(envelope_id)
        (answer,) = await fake_slack.wait_for(RESPONSE)
        assert answer.args["blocks"][0]["text"]["text"] == "Exchange Administrator"
    await sim.aclose()
