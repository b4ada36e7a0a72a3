"""Slash command listeners."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers.acking import acks_first
from handlers.commands.itdr import handle_itdr_command
from handlers.ids import Command

LISTENERS = {Command.ITDR: handle_itdr_command}


def register(app: AsyncApp) -> None:
    for command, listener in LISTENERS.items():
        app.command(command.value)(acks_first(listener))
