"""Dialog (view) submission listeners."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers.acking import Listener, acks_first
from handlers.ids import ViewId
from handlers.views.consent_deny import handle_consent_deny_submission
from handlers.views.drift_ack import handle_drift_ack_submission

LISTENERS: dict[ViewId, Listener] = {
    ViewId.CONSENT_DENY: handle_consent_deny_submission,
    ViewId.DRIFT_ACK: handle_drift_ack_submission,
}


def register(app: AsyncApp) -> None:
    for callback_id, listener in LISTENERS.items():
        app.view(callback_id.value)(acks_first(listener))
