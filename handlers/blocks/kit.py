"""Block Kit primitives that respect Slack's limits by construction (truncate, never raise)."""

from __future__ import annotations

import unicodedata
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


_INVISIBLE = frozenset({"Cc", "Cf"})  # C0/C1 controls; format characters (zero-width, bidi overrides)


def clean(text: str) -> str:
    """`text` without control and format characters, line breaks kept.

    User text echoed into an answer (a query, a tenant name) must not carry terminal escapes (`\\x1b[31m`) or
    bidi overrides (U+202E) that reorder what readers see. Every text the primitives below put into a block,
    and every message's fallback text, goes through here."""
    if text.isprintable() or all(line.isprintable() for line in text.split("\n")):  # fast paths: the usual cases
        return text
    return "".join(char for char in text if char in "\n\t" or unicodedata.category(char) not in _INVISIBLE)


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters (and drop invisible ones)."""
    return clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_text(text: str, limit: int, **extra: bool) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(clean(text) or " ", limit), **extra}


def header(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "header", "text": plain_text(text, MAX_HEADER_TEXT)}
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
    return {"type": "mrkdwn", "text": truncate(clean(text) or " ", limit)}


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
        "text": plain_text(text, MAX_BUTTON_TEXT, emoji=True),
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
        object.__setattr__(self, "text", clean(self.text))  # the fallback echoes user text too
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
