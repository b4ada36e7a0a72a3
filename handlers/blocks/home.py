"""The App Home tab: current revision, what changed in it, quick buttons, and an answer panel."""

from __future__ import annotations

from typing import Any

from handlers.blocks.kit import (
    MAX_VIEW_BLOCKS,
    Block,
    Message,
    actions,
    button,
    chunk_lines,
    context,
    divider,
    escape,
    header,
    section,
)
from handlers.ids import ActionId, BlockId, SubCommand, numbered
from handlers.payloads import AnswerRequest

_QUICK = (
    ("What changed", AnswerRequest(cmd=SubCommand.DIFF)),
    ("All revisions", AnswerRequest(cmd=SubCommand.VERSIONS)),
    ("How to use /itdr", AnswerRequest(cmd=SubCommand.HELP)),
)


def _names(names: Any, sign: str) -> list[str]:
    return [f"{sign} `{escape(name)}`" for name in names]


def _prefixed(message: Message, prefix: str, room: int) -> list[Block]:
    """A message's blocks inside the view (block_ids must stay unique within it)."""
    blocks = []
    for block in message.blocks[:room]:
        block = dict(block)
        if "block_id" in block:
            block["block_id"] = f"{prefix}-{block['block_id']}"
        blocks.append(block)
    return blocks


def home_view(catalog: Any, panel: Message | None = None, fleet: Message | None = None) -> dict[str, Any]:
    """The Home tab view (≤ 100 blocks): the catalog, the fleet summary, and `panel`, an answer shown below the
    quick buttons."""
    latest = catalog.latest
    blocks: list[Block] = [
        header("ITDR permission catalog", BlockId.HEADER),
        section(
            f"Current revision: *{latest.version}* · {latest.date.isoformat()} — {escape(latest.title)}\n"
            f"+{len(latest.added)} added, −{len(latest.removed)} removed in this revision.",
            block_id=BlockId.BODY,
        ),
    ]
    changed = _names(latest.added, "+") + _names(latest.removed, "−")
    if changed:
        for n, text in enumerate(chunk_lines(changed, 2900)[:5]):
            blocks.append(section(("*What changed*\n" if n == 0 else "") + text))
    for note in list(latest.notes)[:3]:
        blocks.append(context(escape(note)))
    blocks.append(
        actions(
            [
                button(label, numbered(ActionId.HOME_SHOW, i), req.to_value(), style="primary" if i == 0 else None)
                for i, (label, req) in enumerate(_QUICK)
            ],
            BlockId.HOME_QUICK,
        )
    )
    blocks.append(context("Ask in any channel: `/itdr why Mail.ReadWrite`, `/itdr diff v4 v5`, `/itdr search audit`."))
    if fleet is not None:
        blocks.append(divider())
        blocks += _prefixed(fleet, BlockId.HOME_FLEET, 12)
    if panel is not None:
        blocks.append(divider())
        blocks += _prefixed(panel, BlockId.HOME_PANEL, MAX_VIEW_BLOCKS - len(blocks))
    return {"type": "home", "callback_id": "itdr-home", "blocks": blocks[:MAX_VIEW_BLOCKS]}
