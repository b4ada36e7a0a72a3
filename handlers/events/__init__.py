"""Events API listeners (acknowledged automatically by Bolt before they run)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers.acking import acks_first
from handlers.events.app_home_opened import handle_app_home_opened
from handlers.ids import Event

LISTENERS = {Event.APP_HOME_OPENED: handle_app_home_opened}


def register(app: AsyncApp) -> None:
    for event, listener in LISTENERS.items():
        app.event(event.value)(acks_first(listener))
