"""Nothing said in public before it is stored: on a Redis that refuses writes, an acting command says so privately
and posts nothing in the channel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from bot.store import EmbeddedRedis
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim
from tests.test_drift_slack import command, tenant
from tests.test_slack_check import microsoft_settings


@pytest.fixture
def refusing_writes() -> Iterator[str]:
    """A Redis that answers reads and refuses every write, as a primary that lost its replicas does (NOREPLICAS)."""
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("min-replicas-to-write", 1)
        client.close()
        yield server.url


async def test_watch_on_a_redis_refusing_writes_posts_nothing_in_the_channel(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any], refusing_writes: str
) -> None:
    running = serve_app(redis_url=refusing_writes, **microsoft_settings(microsoft))
    slack = SlackSim(running.events_url, fake_slack)
    try:
        _, answer = await command(slack, fake_slack, f"watch {tenant(microsoft).tenant_id}")
    finally:
        await slack.aclose()
    assert answer is not None and "I cannot record the watch" in answer["text"]
    assert answer.get("response_type") != "in_channel"
    assert fake_slack.calls_to("chat.postMessage") == [], "nothing announced that was not stored"
