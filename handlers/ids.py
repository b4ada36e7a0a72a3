"""Every Slack identifier the app emits or listens to, as named constants (kebab-case values)."""

from __future__ import annotations

import re
from enum import StrEnum


class Command(StrEnum):
    ITDR = "/itdr"


class SubCommand(StrEnum):
    WHY = "why"
    SEARCH = "search"
    VERSIONS = "versions"
    DIFF = "diff"
    CHECK = "check"
    CONSENT = "consent"
    AUDIT = "audit"
    WATCH = "watch"
    UNWATCH = "unwatch"
    WATCHING = "watching"
    FLEET = "fleet"
    FIX = "fix"
    HELP = "help"


# Sub-commands that act (ask Microsoft, record a request or a watch) or answer after the ack: run once per delivery.
ACTING_SUB_COMMANDS = frozenset({SubCommand.CHECK, SubCommand.CONSENT, SubCommand.WATCH, SubCommand.UNWATCH,
                                 SubCommand.FIX})


class ActionId(StrEnum):
    SHARE = "itdr-share"
    ASK = "itdr-ask"  # did-you-mean suggestions, search results, revision diffs: answer this request
    SHOW_MORE = "itdr-show-more"
    HOME_SHOW = "itdr-home-show"
    RECHECK = "itdr-recheck"
    CONSENT_REVIEW = "consent-review"
    CONSENT_APPROVE = "consent-approve"
    CONSENT_DENY = "consent-deny"
    CONSENT_GRANT = "consent-grant"  # a link button: Slack still reports the click, which is only acknowledged
    CONSENT_VERIFY = "consent-verify"
    CONSENT_START = "consent-start"  # value: handlers.payloads.StartConsentValue; any surface may offer it
    DRIFT_RECHECK = "drift-recheck"
    DRIFT_CONSENT = "drift-consent"
    DRIFT_ACK = "drift-ack"
    DRIFT_SNOOZE = "drift-snooze"
    FIX_RECHECK = "fix-recheck"
    FIX_RECHECK_LATER = "fix-recheck-later"
    FIX_CONSENT = "fix-consent"


class BlockId(StrEnum):
    HEADER = "itdr-header"
    BODY = "itdr-body"
    FOOTER = "itdr-footer"
    SUGGESTIONS = "itdr-suggestions"
    ANSWER_ACTIONS = "itdr-answer-actions"
    HOME_QUICK = "itdr-home-quick"
    HOME_PANEL = "itdr-home-panel"
    HOME_FLEET = "itdr-home-fleet"
    CHECK_EXPLAIN = "itdr-check-explain"
    CONSENT_HEADER = "consent-header"
    CONSENT_TENANT = "consent-tenant"
    CONSENT_STATE = "consent-state"
    CONSENT_ACTIONS = "consent-actions"
    CONSENT_DENY_REASON = "consent-deny-reason"
    DRIFT_ACTIONS = "drift-actions"
    DRIFT_CLOSED = "drift-closed"
    DRIFT_ACK_REASON = "drift-ack-reason"
    REVISION = "revision"
    FIX_ACTIONS = "fix-actions"


class ViewId(StrEnum):
    CONSENT_REVIEW = "consent-review"
    CONSENT_DENY = "consent-deny"
    DRIFT_ACK = "drift-ack"


class Event(StrEnum):
    APP_HOME_OPENED = "app_home_opened"


def numbered(action: ActionId, n: int) -> str:
    """action_id of the n-th button of one kind in a block (Slack wants action_ids unique per block)."""
    return action.value if n == 0 else f"{action.value}-{n}"


def action_pattern(action: ActionId) -> re.Pattern[str]:
    """Matches `action` and its numbered variants."""
    return re.compile(rf"^{re.escape(action.value)}(-\d+)?$")
