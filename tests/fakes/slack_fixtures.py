"""Pytest fixtures for the Slack surface: the fake Slack, the app served by uvicorn, the signing client.

Imported by tests/conftest.py so every test module sees them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from bot.server import create_asgi_app
from bot.settings import Mode, Settings, load_settings
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SIGNING_SECRET, SlackSim


@dataclass
class ServedApp:
    """An ASGI app served by a real uvicorn in its own thread and event loop, on a free port."""

    asgi: Any
    host: str = "127.0.0.1"
    port: int = 0
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def events_url(self) -> str:
        return self.url + "/slack/events"

    def start(self) -> ServedApp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.asgi, lifespan="on", log_level="warning", log_config=None, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)


def slack_settings(
    fake: FakeSlack, redis_url: str | None, redis_prefix: str, *, mode: Mode | None = None, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": fake.bot_token,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_app_token": fake.app_token,
        "slack_api_url": fake.api_url,
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
    } | overrides
    return load_settings(mode, _env_file=None, **values)


@pytest.fixture
def slack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real Slack credentials or endpoints leak in from the environment (R-NET-1)."""
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "SLACK_API_URL",
        "SLACK_CLIENT_ID",
        "SLACK_CLIENT_SECRET",
        "SLACK_VERIFICATION_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake_slack(slack_env: None) -> AsyncIterator[FakeSlack]:
    """The fake Slack Web API / response_url / Socket Mode server; fails the test on any Block Kit violation."""
    fake = await FakeSlack().start()
    try:
        yield fake
    finally:
        await fake.stop()
    assert not fake.violations, "Slack would reject what the app sent:\n" + "\n".join(fake.violations)


@pytest.fixture
def serve_app(fake_slack: FakeSlack, redis_url: str, redis_prefix: str) -> Iterator[Callable[..., ServedApp]]:
    """Factory: build the HTTP-mode app from settings pointed at the fakes and serve it with uvicorn.

    `serve_app(redis_url=..., catalog=..., register=..., readiness=...)` overrides pieces for a test; other
    keywords are settings.
    """
    served: list[ServedApp] = []

    def start(
        *,
        redis_url: str | None = redis_url,
        register: Callable[[Any], None] | None = None,
        catalog: Any = None,
        readiness: Any = None,
        **settings_overrides: Any,
    ) -> ServedApp:
        settings = slack_settings(fake_slack, redis_url, redis_prefix, mode=Mode.HTTP, **settings_overrides)
        options = {key: value for key, value in (("catalog", catalog), ("readiness", readiness)) if value is not None}
        running = ServedApp(create_asgi_app(settings, register=register, **options)).start()
        served.append(running)
        return running

    yield start
    for running in served:
        running.stop()


@pytest.fixture
async def slack(fake_slack: FakeSlack, serve_app: Callable[..., ServedApp]) -> AsyncIterator[SlackSim]:
    """The default setup: the app served over HTTP against the fakes, and a signing client pointed at it."""
    running = serve_app()
    sim = SlackSim(running.events_url, fake_slack)
    try:
        yield sim
    finally:
        await sim.aclose()
