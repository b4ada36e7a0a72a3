"""`itdr console`: type `/itdr …` lines, read the answers as text, press buttons by number.

It drives the very same `AsyncApp` and listeners as HTTP and Socket Mode: each line becomes a Socket Mode
style request dispatched through Bolt, and a local "Slack" on 127.0.0.1 receives what the app sends back
(response_url posts, messages, `views.publish`) and prints it. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import queue
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.app import build_app
from bot.background import BackgroundTasks
from bot.loopback import LocalSlack, parse_body
from bot.runtime import Runtime
from bot.settings import Mode, Settings
from bot.signals import run_until_signalled

CONSOLE_TOKEN = "xoxb-console-loopback"
TEAM, USER, CHANNEL = LocalSlack.team_id, "U0CONSOLE", "C0CONSOLE"
HELP = "Type `/itdr why Mail.ReadWrite` (the `/itdr` is optional), `home`, a button number, or `quit`."
#: A line a session handles itself: True when it did.
LineHandler = Callable[[str], Awaitable[bool]]


@dataclass
class Button:
    label: str
    action_id: str
    value: str
    block_id: str
    home: bool = False


class Loopback(LocalSlack):
    """Receives what the app sends to "Slack" while running in the console."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def web_api(self, request: web.Request) -> web.Response:
        method, args = request.match_info["method"], await parse_body(request)
        if method != "auth.test":
            await self.inbox.put((method, args))
        return web.json_response(self.answer(method, args))

    async def response(self, request: web.Request) -> web.Response:
        await self.inbox.put(("response_url", await parse_body(request)))
        return web.Response(text="ok")


# ----------------
#  rendering
# ----------------

_LINK = re.compile(r"<[@#!]?([^|>]+)(?:\|([^>]+))?>")
_BOLD = re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?!\s)([^_\n]+?)(?<!\s)_(?![\w_])")
_EMOJI = re.compile(r":([a-z0-9_+-]+):")
_CODE = re.compile(r"(`[^`\n]+`)")
#: The shortcodes the app uses, as terminal symbols; any other shortcode is left as typed.
EMOJI = {
    "warning": "⚠", "x": "✗", "white_check_mark": "✓", "heavy_check_mark": "✓", "no_entry": "⛔",
    "grey_question": "?", "large_yellow_circle": "●", "heavy_plus_sign": "+", "heavy_minus_sign": "−",
    "information_source": "ℹ", "hourglass_flowing_sand": "⏳", "lock": "🔒", "bell": "🔔", "mag": "🔍",
    "rotating_light": "🚨", "arrows_counterclockwise": "🔄", "mega": "📣", "eyes": "👀", "zzz": "💤",
    "ballot_box_with_check": "☑", "key": "🔑", "hourglass": "⌛",
}


def plain(mrkdwn: str, *, bold: bool = False) -> str:
    """Slack mrkdwn → terminal text: links and mentions read as text, *bold* (in ANSI bold on a terminal) and
    _italic_ lose their markers, emoji shortcodes become symbols, entities are decoded. A `code span` is literal,
    as Slack shows it: its `*` and `_` stay (a diff's `Policy.ReadWrite.*, DeviceManagement*` keeps its wildcards)."""
    parts = _CODE.split(mrkdwn)  # odd parts are code spans
    return "".join(_decode(part) if index % 2 else _decode(_format(part, bold)) for index, part in enumerate(parts))


def _format(text: str, bold: bool) -> str:
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    text = _BOLD.sub(lambda m: f"\033[1m{m.group(1)}\033[0m" if bold else m.group(1), text)
    text = _ITALIC.sub(lambda m: m.group(1), text)
    return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def _decode(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_blocks(
    blocks: list[dict[str, Any]], buttons: list[Button], *, home: bool = False, bold: bool = False,
    links: list[str] | None = None,
) -> list[str]:
    """Blocks as text lines; buttons get numbers appended to `buttons`, link buttons' URLs to `links`."""
    lines: list[str] = []

    def text(value: str) -> str:
        return plain(value, bold=bold)

    def add_button(element: dict[str, Any], block_id: str) -> str:
        label = element["text"]["text"]
        if element.get("url"):  # a link button opens a page rather than calling the app
            if links is not None:
                links.append(element["url"])
            return f"[{label}: {element['url']}]"
        buttons.append(Button(label, element["action_id"], element.get("value", ""), block_id, home))
        return f"[{len(buttons)}] {label}"

    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            lines += ["", f"== {text(block['text']['text'])} =="]
        elif kind == "section":
            if block.get("text"):
                lines.append(text(block["text"]["text"]))
            lines += [text(f["text"]) for f in block.get("fields") or []]
            accessory = block.get("accessory")
            if accessory and accessory.get("type") == "button":
                lines.append("    " + add_button(accessory, block.get("block_id", "")))
        elif kind == "context":
            lines.append("  (" + " · ".join(text(e.get("text", "")) for e in block.get("elements", [])) + ")")
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
    links: list[str] = field(default_factory=list)  # link buttons' URLs shown, newest last (the demo opens them)
    wait_seconds: float = 5.0
    #: The listeners' work after their ack (a check, a card): its answers are printed once it is done.
    background: BackgroundTasks | None = None
    settle_seconds: float = 60.0
    #: Lines a session adds (the demo's `sweep`, `demo revoke …`): True when it handled the line.
    extension: LineHandler | None = None
    _triggers: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def bold(self) -> bool:
        return bool(getattr(self.out, "isatty", lambda: False)())

    def print(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.out)
        self.out.flush()

    async def dispatch(self, body: dict[str, Any]) -> None:
        response = await self.app.async_dispatch(AsyncBoltRequest(body=body, mode="socket_mode"))
        if response.status != 200:
            self.print(f"(the app answered {response.status})")
        elif response.body:  # an answer carried by the ack itself
            try:
                payload = json.loads(response.body)
            except ValueError:
                payload = {"text": response.body}
            self.show("response_url", payload)
        if self.background is not None:
            await self.background.settled(self.settle_seconds)
        await self.collect(quiet=bool(response.body))

    async def collect(self, *, quiet: bool = False, wait: float | None = None) -> None:
        """Print what the app sends back: wait for the first item (`wait` seconds, quietly), then drain what follows
        quickly."""
        timeout = wait if wait is not None else 0.3 if quiet else self.wait_seconds
        try:
            item = await asyncio.wait_for(self.loopback.inbox.get(), timeout)
        except TimeoutError:
            if not quiet and wait is None:
                self.print("(no answer)")
            return
        while True:
            self.show(*item)
            try:
                item = await asyncio.wait_for(self.loopback.inbox.get(), 0.05)
            except TimeoutError:
                return

    def show(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "views.publish":
            self.buttons = []
            self.home_view = payload.get("view") or {}
            lines = render_blocks(self.home_view.get("blocks", []), self.buttons, home=True, bold=self.bold)
            self.print("", "[Home tab]", *lines, "")
            return
        if kind.startswith("views."):  # a modal: its buttons cannot be pressed from here
            view = payload.get("view") or {}
            title = (view.get("title") or {}).get("text", "")
            self.print("", f"[dialog: {title}]", *render_blocks(view.get("blocks", []), [], bold=self.bold), "")
            return
        if kind == "chat.update":
            where = "updated in the channel"
        elif kind == "chat.postMessage" or payload.get("response_type") == "in_channel":
            where = "posted in the channel"
        else:
            where = "only you can see this"
        blocks = payload.get("blocks") or []
        buttons: list[Button] = []
        lines = (render_blocks(blocks, buttons, bold=self.bold, links=self.links) if blocks
                 else [plain(payload.get("text", ""))])
        if buttons:  # a note without buttons ("Posted the request") leaves the card's buttons pressable
            self.buttons = buttons
        self.print("", f"[{where}]", *lines, "")

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

    async def press(self, which: str, *, user: str = USER) -> None:
        """Press a button of the last answer with buttons, by number or label, as `user`."""
        if which.isdigit():
            number = int(which)
            if not 1 <= number <= len(self.buttons):
                self.print(f"(no button {number}; the last answer has {len(self.buttons)})")
                return
            button = self.buttons[number - 1]
        else:
            labelled = [b for b in self.buttons if b.label.lower() == which.lower()]
            if not labelled:
                self.print(f"(no {which} button; the last answer has {', '.join(b.label for b in self.buttons)})")
                return
            button = labelled[0]
        await self.dispatch(self.action_body(button, user=user))

    def action_body(self, button: Button, *, user: str = USER) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "block_actions",
            "team": {"id": TEAM},
            "user": {"id": user},
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
        if self.extension is not None and await self.extension(line):
            return True
        if line.isdigit():
            await self.press(line)
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


class Prompt:
    """Terminal lines, read by a daemon thread one at a time, only when asked.

    Asking per line keeps the prompt after the answer (never on the answer's first line), and a daemon thread
    (not the event loop's executor) lets Ctrl-C leave at once instead of waiting for Enter.
    """

    def __init__(self, prompt: str) -> None:
        self._prompt = prompt
        self._asks: queue.SimpleQueue[asyncio.Future[str | None]] = queue.SimpleQueue()
        threading.Thread(target=self._read, name="console-input", daemon=True).start()

    def _read(self) -> None:
        while True:
            future = self._asks.get()
            try:
                line: str | None = input(self._prompt)
            except (EOFError, KeyboardInterrupt):
                line = None
            loop = future.get_loop()
            loop.call_soon_threadsafe(_settle, future, line)
            if line is None:
                return

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self._asks.put(future)
            line = await future
            if line is None:
                return
            yield line


def _settle(future: asyncio.Future[str | None], line: str | None) -> None:
    """Hand a read line to the waiting prompt (on the event loop's thread), unless it gave up waiting."""
    if not future.done():
        future.set_result(line)


#: A session around the console (the demo): given the runtime and the console, it runs what it needs while the
#: console does and yields its line handler.
Session = Callable[[Runtime, "Console"], contextlib.AbstractAsyncContextManager[LineHandler]]


async def run_console(
    settings: Settings,
    *,
    lines: Iterable[str] | AsyncIterator[str] | None = None,
    out: TextIO | None = None,
    stop: asyncio.Event | None = None,
    banner: str | None = None,
    session: Session | None = None,
) -> int:
    """Run the console until `quit`, end of input or `stop`. `lines`/`out` default to the terminal; `banner` replaces
    the greeting; `session` adds lines of its own."""
    out = out or sys.stdout
    stop = stop or asyncio.Event()
    loopback = Loopback()
    await loopback.start()
    try:
        local = settings.model_copy(update={"slack_api_url": loopback.api_url})
        async with Runtime.open(local, Mode.CONSOLE, slack_token=CONSOLE_TOKEN) as runtime, \
                contextlib.AsyncExitStack() as stack:
            console = Console(build_app(runtime), loopback, out, background=runtime.background)
            if session is not None:
                console.extension = await stack.enter_async_context(session(runtime, console))
            console.print(banner or "itdr console: " + HELP)
            source: AsyncIterator[str] = (
                _aiter(lines) if lines is not None and not isinstance(lines, AsyncIterator)
                else lines if lines is not None else aiter(Prompt("itdr> "))
            )
            while not stop.is_set():
                next_line = asyncio.ensure_future(anext(source, None))
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait({next_line, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not next_line.done():
                    next_line.cancel()
                    break
                line = next_line.result()
                if line is None or not await console.handle_line(line):
                    break
    finally:
        await loopback.stop()
    return 0


async def _aiter(lines: Iterable[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


def run(settings: Settings) -> int:
    """`itdr console` until `quit`, end of input, Ctrl-C or SIGTERM."""
    code = run_until_signalled(lambda stop: _console(settings, stop))
    print(file=sys.stdout)  # leave the shell prompt on a line of its own after Ctrl-C
    return code


async def _console(settings: Settings, stop: asyncio.Event) -> None:
    await run_console(settings, stop=stop)
