"""Every Slack listener of itdr-bot, grouped by Slack surface; `register(app)` is the only wiring."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers import actions, commands, errors, events, middleware, views


def register(app: AsyncApp) -> None:
    errors.register(app)
    middleware.register(app)
    commands.register(app)
    actions.register(app)
    views.register(app)
    events.register(app)
