"""A fake Slack, over real HTTP on a free port: the Web API, `response_url`s and a Socket Mode WebSocket.

It records every call, answers like Slack (auth.test, chat.*, views.publish, apps.connections.open),
injects HTTP 429 with Retry-After, `ok: false` errors and latency on demand, enforces response_url use
limits, and checks Block Kit limits on everything it receives (`violations`; a fixture fails the test
when any appear). Run it in the test's event loop: `fake = await FakeSlack().start()`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bot.loopback import LocalSlack, parse_body
from tests.fakes.slack_blocks import message_violations, view_violations

BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
TEAM_ID = "T111"
BOT_USER_ID = "W999"
BOT_ID = "B999"
RESPONSE_URL_MAX_USES = 5
RESPONSE = "response_url"


@dataclass
class Call:
    """One request the fake received: a Web API method (`chat.postMessage`) or `response_url`."""

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    at: float
    path: str = ""
    status: int = 200
    ok: bool = True
    response: dict[str, Any] = field(default_factory=dict)  # what the fake answered (a message's ts, ...)


@dataclass
class Fault:
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    times: int = 1


class FakeSlack(LocalSlack):
    team_id = TEAM_ID
    bot_user_id = BOT_USER_ID
    bot_id = BOT_ID

    def __init__(self, bot_token: str = BOT_TOKEN, app_token: str = APP_TOKEN) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.app_token = app_token
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self._faults: dict[str, list[Fault]] = {}
        self._delays: dict[str, float] = {}
        self._response_uses: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._socket_connected = asyncio.Event()
        self.usergroups: dict[str, list[str]] = {}  # usergroups.users.list answers, by group id
        # Every Web API answer carries the token's granted scopes in `x-oauth-scopes` (comma-separated), per
        # https://api.slack.com/scopes ("Scopes and permissions": "x-oauth-scopes lists the scopes this token has").
        self.scopes: list[str] = ["commands", "chat:write", "usergroups:read"]
        self.clock_offset = 0.0  # seconds added to the `Date` header: a skewed Slack clock

    # ----------------
    #  lifecycle
    # ----------------

    def routes(self, app: web.Application) -> None:
        super().routes(app)
        app.router.add_get("/link", self._socket)

    async def start(self) -> FakeSlack:
        await super().start()
        return self

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        await super().stop()

    # ----------------
    #  fault injection
    # ----------------

    def fail(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next `times` calls of `method` (or RESPONSE) fail: HTTP `status`, Slack `error`."""
        if status == 429 and error is None:
            error = "ratelimited"
        self._faults.setdefault(method, []).append(Fault(status, error or "fatal_error", retry_after, times))

    def rate_limit(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        self.fail(method, status=429, retry_after=retry_after, times=times)

    def delay(self, method: str, seconds: float) -> None:
        """Answer `method` (or RESPONSE) only after `seconds`."""
        self._delays[method] = seconds

    def _take_fault(self, method: str) -> Fault | None:
        faults = self._faults.get(method) or []
        if not faults:
            return None
        fault = faults[0]
        fault.times -= 1
        if fault.times <= 0:
            faults.pop(0)
        return fault

    # ----------------
    #  assertions
    # ----------------

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def responses(self, ok_only: bool = True) -> list[Call]:
        return [c for c in self.calls_to(RESPONSE) if c.ok or not ok_only]

    async def wait_for(self, method: str, *, count: int = 1, within: float = 5.0, ok_only: bool = True) -> list[Call]:
        """Wait until `method` was received `count` times (successful ones by default); return those calls."""

        def matching() -> list[Call]:
            return [c for c in self.calls_to(method) if c.ok or not ok_only]

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: len(matching()) >= count), within)
            except TimeoutError:
                seen = sorted({c.method for c in self.calls})
                raise AssertionError(
                    f"expected {count} {method!r} call(s) within {within}s, got {len(matching())}; seen: {seen}"
                ) from None
        return matching()

    async def answer_at(self, response_url: str, *, within: float = 5.0) -> dict[str, Any]:
        """The latest message the app posted to `response_url`, waiting for one to arrive."""
        path = "/" + response_url.split("/", 3)[3]

        def mine() -> list[Call]:
            return [c for c in self.calls_to(RESPONSE) if c.ok and c.path == path]

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: bool(mine())), within)
            except TimeoutError:
                raise AssertionError(f"nothing was posted to {path} within {within}s") from None
        return mine()[-1].args

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    # ----------------
    #  Web API
    # ----------------

    async def web_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await parse_body(request)
        auth = request.headers.get("Authorization", "")
        call = Call(method, args, dict(request.headers), time.monotonic(), request.path)
        if method in self._delays:
            await asyncio.sleep(self._delays[method])
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if auth != f"Bearer {expected}":
            call.status, call.ok = 401, False
            await self._record(call)
            return web.json_response({"ok": False, "error": "invalid_auth"})
        fault = self._take_fault(method)
        if fault is not None:
            call.status, call.ok = fault.status, False
            await self._record(call)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return web.json_response({"ok": False, "error": fault.error}, status=fault.status, headers=headers)
        problems = self._check(method, args)
        if problems:
            call.ok = False
            await self._record(call)
            return web.json_response({"ok": False, "error": "invalid_blocks", "errors": problems})
        call.response = self.answer(method, args)
        await self._record(call)
        return web.json_response(call.response, headers={
            "x-oauth-scopes": ",".join(self.scopes),
            "Date": email.utils.formatdate(time.time() + self.clock_offset, usegmt=True)})

    def _check(self, method: str, args: dict[str, Any]) -> list[str]:
        if method.startswith("chat."):
            problems = message_violations(args)
        elif method.startswith("views."):
            problems = view_violations(args.get("view") or {})
        else:
            return []
        self.violations += [f"{method}: {p}" for p in problems]
        return problems

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "usergroups.users.list":
            group = str(args.get("usergroup"))
            if group not in self.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": self.usergroups[group]}
        return super().answer(method, args)

    # ----------------
    #  response_url
    # ----------------

    async def response(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        args = await parse_body(request)
        call = Call(RESPONSE, args, dict(request.headers), time.monotonic(), request.path)
        if RESPONSE in self._delays:
            await asyncio.sleep(self._delays[RESPONSE])
        uses = self._response_uses.get(rid, 0) + 1
        self._response_uses[rid] = uses
        if uses > RESPONSE_URL_MAX_USES:
            call.status, call.ok = 404, False
            self.violations.append(f"response_url {rid} used {uses} times (max {RESPONSE_URL_MAX_USES})")
            await self._record(call)
            return web.Response(status=404, text="used_url")
        fault = self._take_fault(RESPONSE)
        if fault is not None:
            call.status, call.ok = fault.status, False
            await self._record(call)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return web.Response(status=fault.status, text=fault.error or "error", headers=headers)
        problems = message_violations(args)
        if problems:
            self.violations += [f"response_url: {p}" for p in problems]
            call.status, call.ok = 400, False
            await self._record(call)
            return web.Response(status=400, text="invalid_blocks")
        await self._record(call)
        return web.Response(text="ok")

    # ----------------
    #  Socket Mode
    # ----------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "connection_info": {"app_id": "A111"},
                "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
            }
        )
        self._socket_connected.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self.socket_messages.put(json.loads(msg.data))
        finally:
            self.sockets.remove(ws)
        return ws

    async def socket_connected(self, within: float = 5.0) -> None:
        await asyncio.wait_for(self._socket_connected.wait(), within)

    async def push_envelope(
        self, envelope_type: str, payload: dict[str, Any], *, retry_attempt: int = 0, retry_reason: str = ""
    ) -> str:
        """Send an envelope over the live Socket Mode connection; returns its envelope_id."""
        envelope_id = f"env-{self.next_id():06d}"
        envelope = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": envelope_type != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        await self.sockets[-1].send_json(envelope)
        return envelope_id

    async def socket_ack(self, envelope_id: str, within: float = 3.0) -> dict[str, Any]:
        """The client's acknowledgement of `envelope_id` (must arrive within `within`, default Slack's 3 s)."""
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no ack for {envelope_id} within {within}s")
            message = await asyncio.wait_for(self.socket_messages.get(), remaining)
            if message.get("envelope_id") == envelope_id:
                return message
