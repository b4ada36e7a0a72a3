"""Block Kit for the ops channel: one notice (what happened, and the exact fix). Pure: text in, a message out."""

from __future__ import annotations

from handlers.blocks.kit import Message, context, escape, header, section


def ops_message(title: str, detail: str, fix: str) -> Message:
    """A notice for operators; `detail` and `fix` may quote Microsoft's or Slack's text, so both are escaped."""
    return Message(
        text=f"{title}: {detail} Fix: {fix}",
        blocks=[
            header(title),
            section(escape(detail)),
            section(f"*Fix:* {escape(fix)}"),
            context("itdr-bot ops notice · `itdr doctor` shows the state of every check"),
        ],
    )
