"""The words users read for a status, a privilege and a kind of discrepancy: the same in Slack and the terminal."""

from __future__ import annotations

import json

import pytest

from bot import terminal
from catalog import Item, load_catalog
from handlers.blocks.answers import why_message
from handlers.ids import SubCommand
from handlers.payloads import AnswerRequest

CATALOG = load_catalog()


def _slack_text(item: Item) -> str:
    message = why_message(CATALOG.lookup(item.name), AnswerRequest(cmd=SubCommand.WHY, args=(item.name,)))
    return json.dumps(message.blocks, ensure_ascii=False) + message.text


def test_the_terminal_reads_like_slack() -> None:
    out = terminal.render_item(CATALOG, CATALOG.lookup("Mail.ReadWrite").item)  # type: ignore[arg-type]
    assert "Status        Future use (not required yet)" in out
    assert "Privilege     read/write" in out  # "write" before, "read/write" in Slack
    assert "[Missing NEW! marker] Revision v4 added this permission" in out
    assert "Status        Active" in terminal.render_item(CATALOG, CATALOG.get("AuditLog.Read.All"))  # type: ignore[arg-type]


@pytest.mark.parametrize("item", CATALOG.items, ids=lambda item: item.name)
def test_every_item_is_labelled_alike_in_slack_and_the_terminal(item: Item) -> None:
    slack, text = _slack_text(item), terminal.render_item(CATALOG, item)
    for label in (item.status_label, item.impact.privilege_label, *(d.label for d in item.discrepancies)):
        assert label in slack, label
        assert label in " ".join(text.split()), label  # the terminal wraps long lines
    for discrepancy in item.discrepancies:
        assert f"*Discrepancy: {discrepancy.label}*" in slack
        assert f"[{discrepancy.label}]" in text
        assert f"({discrepancy.kind})" not in slack and f"[{discrepancy.kind.replace('_', ' ')}]" not in text
