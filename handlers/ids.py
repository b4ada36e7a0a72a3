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
    HELP = "help"


class ActionId(StrEnum):
    SHARE = "itdr-share"
    ASK = "itdr-ask"  # did-you-mean suggestions, search results, revision diffs: answer this request
    SHOW_MORE = "itdr-show-more"
    HOME_SHOW = "itdr-home-show"
    RECHECK = "itdr-recheck"


class BlockId(StrEnum):
    HEADER = "itdr-header"
    BODY = "itdr-body"
    FOOTER = "itdr-footer"
    SUGGESTIONS = "itdr-suggestions"
    ANSWER_ACTIONS = "itdr-answer-actions"
    HOME_QUICK = "itdr-home-quick"
    HOME_PANEL = "itdr-home-panel"
    CHECK_EXPLAIN = "itdr-check-explain"


class Event(StrEnum):
    APP_HOME_OPENED = "app_home_opened"


def numbered(action: ActionId, n: int) -> str:
    """action_id of the n-th button of one kind in a block (Slack wants action_ids unique per block)."""
    return action.value if n == 0 else f"{action.value}-{n}"


def action_pattern(action: ActionId) -> re.Pattern[str]:
    """Matches `action` and its numbered variants."""
    return re.compile(rf"^{re.escape(action.value)}(-\d+)?$")
