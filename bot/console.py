"""`itdr console`: type `/itdr …` lines, read the answers as text, press buttons by number.

It drives the very same `AsyncApp` and listeners as HTTP and Socket Mode: each line becomes a Socket Mode
style request dispatched through Bolt, and a small loopback "Slack" on 127.0.0.1 receives what the app
sends back (response_url posts and `views.publish`) and prints it. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.app import Mode, build_app, build_client
from bot.settings import Settings
from bot.store import open_store

CONSOLE_TOKEN = "xoxb-console-loopback"
TEAM, USER, CHANNEL = "T0CONSOLE", "U0CONSOLE", "C0CONSOLE"
HELP = "Type `/itdr why Mail.ReadWrite` (the `/itdr` is optional), `home`, a button number, or `quit`."


@dataclass
class Button:
    label: str
    action_id: str
    value: str
    block_id: str
    home: bool = False


@dataclass
class Loopback:
    """Receives what the app sends to "Slack" while running in the console."""

    port: int = 0
    inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    _runner: web.AppRunner | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> Loopback:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{rid}", self._response)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/response/{next(self._ids)}"

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.text()
        if request.content_type == "application/json":
            return json.loads(raw or "{}")
        from urllib.parse import parse_qsl

        data: dict[str, Any] = dict(parse_qsl(raw))
        for key in ("view", "blocks"):
            if isinstance(data.get(key), str):
                data[key] = json.loads(data[key])
        return data

    async def _api(self, request: web.Request) -> web.Response:
        method, body = request.match_info["method"], await self._body(request)
        if method == "auth.test":
            return web.json_response({"ok": True, "team_id": TEAM, "user_id": "U0BOT", "bot_id": "B0BOT"})
        await self.inbox.put((method, body))
        view = body.get("view") or {}
        return web.json_response({"ok": True, "view": view | {"id": "V0HOME", "hash": str(time.time())}})

    async def _response(self, request: web.Request) -> web.Response:
        await self.inbox.put(("response_url", await self._body(request)))
        return web.Response(text="ok")


# ----------------
#  rendering
# ----------------

_LINK = re.compile(r"<[@#]?([^|>]+)(?:\|([^>]+))?>")


def plain(mrkdwn: str) -> str:
    """Slack mrkdwn → terminal text (keeps emphasis markers, which read fine as plain text)."""
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), mrkdwn)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_blocks(blocks: list[dict[str, Any]], buttons: list[Button], *, home: bool = False) -> list[str]:
    """Blocks as text lines; buttons get numbers appended to `buttons`."""
    lines: list[str] = []

    def add_button(element: dict[str, Any], block_id: str) -> str:
        buttons.append(Button(element["text"]["text"], element["action_id"], element.get("value", ""), block_id, home))
        return f"[{len(buttons)}] {element['text']['text']}"

    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            lines += ["", f"== {block['text']['text']} =="]
        elif kind == "section":
            if block.get("text"):
                lines.append(plain(block["text"]["text"]))
            lines += [plain(f["text"]) for f in block.get("fields") or []]
            accessory = block.get("accessory")
            if accessory and accessory.get("type") == "button":
                lines.append("    " + add_button(accessory, block.get("block_id", "")))
        elif kind == "context":
            lines.append("  (" + " · ".join(plain(e.get("text", "")) for e in block.get("elements", [])) + ")")
        elif kind == "divider":
            lines.append("-" * 40)
        elif kind == "actions":
            labels = [
                add_button(e, block.get("block_id", "")) for e in block.get("elements", []) if e.get("type") == "button"
            ]
            lines.append("  ".join(labels))
    return lines


# ----------------
#  the console
# ----------------


@dataclass
class Console:
    app: AsyncApp
    loopback: Loopback
    out: TextIO = sys.stdout
    buttons: list[Button] = field(default_factory=list)
    home_view: dict[str, Any] | None = None
    wait_seconds: float = 5.0
    _triggers: Any = field(default_factory=lambda: itertools.count(1))

    def print(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.out)
        self.out.flush()

    async def dispatch(self, body: dict[str, Any]) -> None:
        response = await self.app.async_dispatch(AsyncBoltRequest(body=body, mode="socket_mode"))
        if response.status != 200:
            self.print(f"(the app answered {response.status})")
        elif response.body:  # a reply carried by the ack itself (an error message, "Checking…")
            try:
                payload = json.loads(response.body)
            except ValueError:
                payload = {"text": response.body}
            self.show("response_url", payload)
        await self.collect(quiet=bool(response.body))

    async def collect(self, *, quiet: bool = False) -> None:
        """Print what the app sends back: wait for the first item, then drain what follows quickly."""
        try:
            item = await asyncio.wait_for(self.loopback.inbox.get(), self.wait_seconds)
        except TimeoutError:
            if not quiet:
                self.print("(no answer)")
            return
        while True:
            self.show(*item)
            try:
                item = await asyncio.wait_for(self.loopback.inbox.get(), 0.05)
            except TimeoutError:
                return

    def show(self, kind: str, payload: dict[str, Any]) -> None:
        self.buttons = []
        if kind == "views.publish":
            self.home_view = payload.get("view") or {}
            lines = render_blocks(self.home_view.get("blocks", []), self.buttons, home=True)
            self.print("[Home tab]", *lines, "")
            return
        where = "posted in the channel" if payload.get("response_type") == "in_channel" else "only you can see this"
        blocks = payload.get("blocks") or []
        lines = render_blocks(blocks, self.buttons) if blocks else [payload.get("text", "")]
        self.print(f"[{where}]", *lines, "")

    def command_body(self, text: str) -> dict[str, Any]:
        return {
            "command": "/itdr",
            "text": text,
            "team_id": TEAM,
            "user_id": USER,
            "channel_id": CHANNEL,
            "response_url": self.loopback.response_url(),
            "trigger_id": f"console.{next(self._triggers)}.{time.time()}",
        }

    def action_body(self, button: Button) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "block_actions",
            "team": {"id": TEAM},
            "user": {"id": USER},
            "trigger_id": f"console.{next(self._triggers)}.{time.time()}",
            "actions": [
                {
                    "type": "button",
                    "action_id": button.action_id,
                    "block_id": button.block_id,
                    "value": button.value,
                    "action_ts": str(time.time()),
                }
            ],
        }
        if button.home:
            body |= {"container": {"type": "view", "view_id": "V0HOME"}, "view": self.home_view or {}}
        else:
            body |= {
                "container": {"type": "message", "message_ts": f"{time.time():.6f}", "is_ephemeral": True},
                "channel": {"id": CHANNEL},
                "response_url": self.loopback.response_url(),
            }
        return body

    async def handle_line(self, line: str) -> bool:
        """Act on one input line; False means quit."""
        line = line.strip()
        if not line:
            return True
        if line.lower() in ("quit", "exit", "q"):
            return False
        if line.isdigit():
            number = int(line)
            if not 1 <= number <= len(self.buttons):
                self.print(f"(no button {number}; the last answer has {len(self.buttons)})")
                return True
            await self.dispatch(self.action_body(self.buttons[number - 1]))
            return True
        if line.lower() == "home":
            await self.dispatch(
                {
                    "type": "event_callback",
                    "team_id": TEAM,
                    "event_id": f"Ev{time.time()}",
                    "event": {"type": "app_home_opened", "user": USER, "tab": "home"},
                }
            )
            return True
        text = line[len("/itdr") :].strip() if line.startswith("/itdr") else line
        await self.dispatch(self.command_body(text))
        return True


async def _stdin_lines(prompt: str) -> AsyncIterator[str]:
    while True:
        try:
            yield await asyncio.to_thread(input, prompt)
        except EOFError:
            return


async def run_console(
    settings: Settings, *, lines: Iterable[str] | AsyncIterator[str] | None = None, out: TextIO | None = None
) -> int:
    """Run the console until `quit` or end of input. `lines`/`out` default to the terminal."""
    out = out or sys.stdout
    loopback = await Loopback().start()
    store, embedded = open_store(settings.redis_url, settings.redis_prefix)
    app: AsyncApp | None = None
    try:
        local = settings.model_copy(update={"slack_api_url": loopback.api_url})
        app = build_app(local, mode=Mode.CONSOLE, store=store, client=build_client(local, token=CONSOLE_TOKEN))
        console = Console(app, loopback, out)
        console.print("itdr console: " + HELP)
        source = lines if lines is not None else _stdin_lines("itdr> ")
        if isinstance(source, AsyncIterator):
            async for line in source:
                if not await console.handle_line(line):
                    break
        else:
            for line in source:
                if not await console.handle_line(line):
                    break
    finally:
        if app is not None:
            await app.shared_session.close()  # type: ignore[attr-defined]
        await store.aclose()
        await loopback.stop()
        if embedded is not None:
            embedded.close()
    return 0


def run(settings: Settings) -> int:
    try:
        return asyncio.run(run_console(settings))
    except KeyboardInterrupt:
        return 0
