"""A local stand-in for Slack on 127.0.0.1: the Web API (`POST /api/{method}`) and `response_url`s.

The console uses it to receive what the app sends to "Slack"; the test suite's fake Slack builds on it. Nothing
leaves the machine.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

#: Web API arguments Slack accepts as JSON strings inside form bodies.
_JSON_FIELDS = ("blocks", "view", "attachments")


async def parse_body(request: web.Request) -> dict[str, Any]:
    """A Web API or response_url body, JSON or form-encoded, with JSON-valued fields decoded."""
    raw = await request.text()
    if request.method == "GET":  # a few Web API methods are called with GET and a query string
        return dict(request.query)
    if not raw:
        return {}
    if request.content_type == "application/json":
        data = json.loads(raw)
    else:
        data = dict(parse_qsl(raw, keep_blank_values=True))
    for key in _JSON_FIELDS:
        if isinstance(data.get(key), str):
            with contextlib.suppress(ValueError):  # left as sent: a checker will say what is wrong with it
                data[key] = json.loads(data[key])
    return data


class LocalSlack:
    """Serves `/api/{method}` and `/response/{rid}` on a free port; subclasses decide the answers."""

    team_id = "T0LOCAL"
    bot_user_id = "U0BOT"
    bot_id = "B0BOT"

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/{method}", self.web_api)
        app.router.add_get("/api/{method}", self.web_api)
        app.router.add_post("/response/{rid}", self.response)

    async def start(self) -> LocalSlack:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        addresses = self._runner.addresses  # (host, port) of each listening socket
        assert addresses
        self.port = addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        return self.url + "api/"

    def response_url(self) -> str:
        """A fresh response_url, as Slack puts in each command and interactive payload."""
        return f"{self.url}response/R{next(self._ids):06d}"

    def next_id(self) -> int:
        return next(self._ids)

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """What Slack answers to a successful Web API call, in the documented shapes."""
        ts = f"{time.time():.6f}"
        match method:
            case "auth.test":
                return {"ok": True, "url": "https://local.slack.test/", "team": "Local", "user": "itdr",
                        "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                        "is_enterprise_install": False}
            case "chat.postMessage":
                return {"ok": True, "channel": args.get("channel"), "ts": ts,
                        "message": {"text": args.get("text"), "ts": ts, "bot_id": self.bot_id}}
            case "chat.postEphemeral":
                return {"ok": True, "message_ts": ts}
            case "chat.update":
                return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text")}
            case "views.publish" | "views.open" | "views.update" | "views.push":
                view = dict(args.get("view") or {})
                return {"ok": True, "view": view | {"id": f"V{self.next_id():06d}", "hash": ts}}
            case "apps.connections.open":
                return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"}
        return {"ok": True}

    async def web_api(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def response(self, request: web.Request) -> web.Response:
        raise NotImplementedError
