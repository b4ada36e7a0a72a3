"""Block Kit primitives that respect Slack's limits by construction (truncate, never raise)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_FALLBACK_TEXT = 3000

Block = dict[str, Any]
ELLIPSIS = "…"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def header(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "header", "text": {"type": "plain_text", "text": truncate(text, MAX_HEADER_TEXT)}}
    if block_id:
        block["block_id"] = block_id
    return block


def section(text: str, *, block_id: str | None = None, fields: list[str] | None = None) -> Block:
    block: Block = {"type": "section", "text": mrkdwn(text, MAX_SECTION_TEXT)}
    if fields:
        block["fields"] = [mrkdwn(f, MAX_FIELD_TEXT) for f in fields[:MAX_FIELDS]]
    if block_id:
        block["block_id"] = block_id
    return block


def mrkdwn(text: str, limit: int = MAX_SECTION_TEXT) -> dict[str, str]:
    return {"type": "mrkdwn", "text": truncate(text or " ", limit)}


def context(*texts: str, block_id: str | None = None) -> Block:
    block: Block = {
        "type": "context",
        "elements": [mrkdwn(t, MAX_FIELD_TEXT) for t in texts[:MAX_CONTEXT_ELEMENTS]],
    }
    if block_id:
        block["block_id"] = block_id
    return block


def divider() -> Block:
    return {"type": "divider"}


def button(text: str, action_id: str, value: str, *, style: Literal["primary", "danger"] | None = None) -> Block:
    element: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": truncate(text, MAX_BUTTON_TEXT), "emoji": True},
        "action_id": action_id,
        "value": value,
    }
    if style:
        element["style"] = style
    return element


def actions(elements: list[Block], block_id: str) -> Block:
    return {"type": "actions", "block_id": block_id, "elements": elements[:MAX_ACTIONS_ELEMENTS]}


def chunk_lines(lines: list[str], limit: int = MAX_SECTION_TEXT) -> list[str]:
    """Join lines into as few texts as possible, each at most `limit` characters (long lines truncated)."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        line = truncate(line, limit)
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True)
class Message:
    """A rendered answer: plain-text fallback plus blocks (≤ 50)."""

    text: str
    blocks: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.blocks) > MAX_MESSAGE_BLOCKS:  # builders page long answers; this is a last guard
            raise ValueError(f"message has {len(self.blocks)} blocks (max {MAX_MESSAGE_BLOCKS})")

    def to_ack(self) -> dict[str, Any]:
        """Keyword arguments for Bolt's `ack()`: an immediate ephemeral reply carried by the ack itself."""
        return {"text": truncate(self.text, MAX_FALLBACK_TEXT), "blocks": self.blocks, "response_type": "ephemeral"}

    def to_response(
        self,
        *,
        response_type: Literal["ephemeral", "in_channel"] = "ephemeral",
        replace_original: bool = False,
    ) -> dict[str, Any]:
        """Keyword arguments for Bolt's `respond()` (response_url payload)."""
        return {
            "text": truncate(self.text, MAX_FALLBACK_TEXT),
            "blocks": self.blocks,
            "response_type": response_type,
            "replace_original": replace_original,
        }
