"""The Slack sub-commands of the `itdr` CLI (`serve`, `socket`, `console`) and the main-job rule.

`bot/cli.py` wires these in with `add_commands(subparsers)` and calls `start_main_job()` from `itdr start`.
Every command loads settings first and turns a missing or malformed one into a single line on stderr
naming the variable (exit status 2), never a traceback and never the value.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the Slack stack is imported only when a Slack command runs: `itdr why` stays fast
    from bot.settings import Mode, Settings

EXIT_CONFIG = 2


def settings_for(mode: Mode, **overrides: object) -> Settings | None:
    """Settings for `mode` with logging set up, or None after printing the one-line reason they are unusable."""
    from bot.logging import setup_logging
    from bot.settings import ConfigError, Mode, load_settings

    try:
        settings = load_settings(mode, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        print(f"itdr: {exc}", file=sys.stderr)
        return None
    # A one-shot command says what matters on its own; its log shows only warnings unless LOG_LEVEL asks for more.
    quiet = mode is Mode.CLI and "LOG_LEVEL" not in os.environ
    setup_logging("WARNING" if quiet else settings.log_level, fmt=settings.log_format)
    return settings


def _run(mode: Mode, runner: Callable[[Settings], int], **overrides: object) -> int:
    settings = settings_for(mode, **overrides)
    return EXIT_CONFIG if settings is None else runner(settings)


def _serve(settings: Settings, host: str = "0.0.0.0") -> int:
    from bot.server import serve

    return serve(settings, host=host)


def _socket(settings: Settings) -> int:
    from bot.socket_mode import run

    return run(settings)


def _console(settings: Settings) -> int:
    from bot.console import run

    return run(settings)


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.settings import Mode

    return _run(Mode.HTTP, lambda s: _serve(s, host=args.host), port=args.port)


def cmd_socket(args: argparse.Namespace) -> int:
    from bot.settings import Mode

    return _run(Mode.SOCKET, _socket)


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run

    return run()


def cmd_console(args: argparse.Namespace) -> int:
    from bot.settings import Mode

    return _run(Mode.CONSOLE, _console)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve`, `socket` and `console` to the `itdr` argument parser."""
    serve = subparsers.add_parser(
        "serve",
        help="run the Slack app in HTTP mode (POST /slack/events, GET /healthz)",
        description="HTTP mode: needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET; listens on PORT (default 3000).",
    )
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default: PORT or 3000)")
    serve.add_argument("--host", default="0.0.0.0", help="interface to bind (default: 0.0.0.0)")
    serve.set_defaults(func=cmd_serve)

    socket = subparsers.add_parser(
        "socket",
        help="run the Slack app in Socket Mode (no public URL)",
        description="Socket Mode: needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN (xapp-, scope connections:write).",
    )
    socket.set_defaults(func=cmd_socket)

    console = subparsers.add_parser(
        "console",
        help="try the /itdr commands in the terminal, no Slack needed",
        description="Reads `/itdr …` lines, prints the answers as text; press buttons by typing their number.",
    )
    console.set_defaults(func=cmd_console)

    demo = subparsers.add_parser(
        "demo",
        help="the console against a simulated Microsoft cloud with sample tenants: nothing real, nothing leaves "
             "the machine",
        description="Check, consent, watch and sweep three sample tenants (contoso, fabrikam, northwind) of a "
                    "simulated Microsoft cloud on 127.0.0.1, with an embedded Redis and no Slack.",
    )
    demo.set_defaults(func=cmd_demo)


def main_job_mode(settings: Settings) -> Mode:
    """Slack tokens set → the bot (Socket Mode when SLACK_APP_TOKEN is set, else HTTP); otherwise the console."""
    from bot.settings import Mode

    if settings.slack_bot_token is None or not settings.slack_bot_token.get_secret_value().strip():
        return Mode.CONSOLE
    if settings.slack_app_token is not None and settings.slack_app_token.get_secret_value().strip():
        return Mode.SOCKET
    return Mode.HTTP


def start_main_job() -> int:
    """`itdr start`: run the bot when Slack tokens are set, the console otherwise (embedded Redis without
    REDIS_URL in every case)."""
    from bot.settings import ConfigError, Mode, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"itdr: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    mode = main_job_mode(settings)
    runner = {Mode.HTTP: _serve, Mode.SOCKET: _socket, Mode.CONSOLE: _console}[mode]
    return _run(mode, runner)
