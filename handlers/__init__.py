"""Every Slack listener of itdr-bot, grouped by Slack surface; `register(app)` is the only wiring.

Listener packages are imported inside `register`, so a worker can import the Block Kit builders
(`handlers.blocks`) without importing Bolt or any listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp


def register(app: AsyncApp) -> None:
    from handlers import actions, commands, errors, events, middleware, views

    errors.register(app)
    middleware.register(app)
    commands.register(app)
    actions.register(app)
    views.register(app)
    events.register(app)
