"""Block action (button) listeners."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers.acking import Listener, acks_first
from handlers.actions.ask import handle_ask_action
from handlers.actions.consent import (
    handle_consent_approve_action,
    handle_consent_deny_action,
    handle_consent_grant_action,
    handle_consent_review_action,
    handle_consent_start_action,
    handle_consent_verify_action,
)
from handlers.actions.drift import (
    handle_drift_ack_action,
    handle_drift_consent_action,
    handle_drift_recheck_action,
    handle_drift_snooze_action,
)
from handlers.actions.fix import (
    handle_fix_consent_action,
    handle_fix_recheck_action,
    handle_fix_recheck_later_action,
)
from handlers.actions.home_show import handle_home_show_action
from handlers.actions.recheck import handle_recheck_action
from handlers.actions.share import handle_share_action
from handlers.ids import ActionId, action_pattern

LISTENERS: dict[ActionId, Listener] = {
    ActionId.SHARE: handle_share_action,
    ActionId.ASK: handle_ask_action,
    ActionId.SHOW_MORE: handle_ask_action,  # the next page is one more answer
    ActionId.HOME_SHOW: handle_home_show_action,
    ActionId.RECHECK: handle_recheck_action,
    ActionId.CONSENT_REVIEW: handle_consent_review_action,
    ActionId.CONSENT_APPROVE: handle_consent_approve_action,
    ActionId.CONSENT_DENY: handle_consent_deny_action,
    ActionId.CONSENT_GRANT: handle_consent_grant_action,
    ActionId.CONSENT_VERIFY: handle_consent_verify_action,
    ActionId.CONSENT_START: handle_consent_start_action,
    ActionId.DRIFT_RECHECK: handle_drift_recheck_action,
    ActionId.DRIFT_CONSENT: handle_drift_consent_action,
    ActionId.DRIFT_ACK: handle_drift_ack_action,
    ActionId.DRIFT_SNOOZE: handle_drift_snooze_action,
    ActionId.FIX_RECHECK: handle_fix_recheck_action,
    ActionId.FIX_RECHECK_LATER: handle_fix_recheck_later_action,
    ActionId.FIX_CONSENT: handle_fix_consent_action,
}


def register(app: AsyncApp) -> None:
    for action_id, listener in LISTENERS.items():
        app.action(action_pattern(action_id))(acks_first(listener))
