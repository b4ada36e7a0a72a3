"""View (modal) listeners. The catalog answers need no modals yet; consent and readiness will add theirs."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

LISTENERS: dict = {}


def register(app: AsyncApp) -> None:
    for callback_id, listener in LISTENERS.items():
        app.view(callback_id)(listener)
