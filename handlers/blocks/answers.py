"""Builders for `/itdr` answers: why, did-you-mean, search, versions, diff (paged) and help.

Every builder is pure: catalog objects in, a `Message` out. `surface` decides which buttons an answer
carries: in a message, "Share in channel" / did-you-mean / "Show more"; on the Home tab, Home buttons that
republish the tab (there is no response_url there); `shared=True` renders the visible copy without a
Share button.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from itertools import groupby
from typing import Any

from catalog import DISCREPANCY_LABELS, PRIVILEGE_LABELS, STATUS_LABELS
from handlers.blocks.kit import (
    Block,
    Message,
    actions,
    button,
    chunk_lines,
    context,
    escape,
    header,
    section,
    truncate,
)
from handlers.ids import ActionId, BlockId, SubCommand, numbered
from handlers.payloads import AnswerRequest

DIFF_PAGE_ITEMS = 25
SEARCH_LIMIT = 10


class Surface(StrEnum):
    MESSAGE = "message"
    HOME = "home"


# ----------------
#  shared pieces
# ----------------


def _value(item: Any, name: str, default: Any = None) -> Any:
    return getattr(item, name, default) if item is not None else default


def _text(value: Any) -> str:
    return str(getattr(value, "value", value)) if value is not None else ""


def _label(labels: Mapping[Any, str], value: str) -> str:
    """The catalog's label for a status, privilege or discrepancy kind (the raw value for an unknown one)."""
    return labels.get(value, value)


def _answer_buttons(
    request: AnswerRequest, surface: Surface, *, shared: bool, next_page: int | None = None
) -> list[Block]:
    elements: list[Block] = []
    if next_page is not None:
        action = ActionId.SHOW_MORE if surface is Surface.MESSAGE else ActionId.HOME_SHOW
        elements.append(button("Show more", action, request.with_page(next_page).to_value(), style="primary"))
    if surface is Surface.MESSAGE and not shared:
        elements.append(button("Share in channel", ActionId.SHARE, request.to_value()))
    return [actions(elements, BlockId.ANSWER_ACTIONS)] if elements else []


def _ask_button(text: str, request: AnswerRequest, surface: Surface, n: int = 0) -> Block:
    action = ActionId.ASK if surface is Surface.MESSAGE else ActionId.HOME_SHOW
    return button(text, numbered(action, n), request.to_value())


def _shared_by(shared_by: str | None, request: AnswerRequest) -> list[Block]:
    if not shared_by:
        return []
    return [context(f"Shared by <@{shared_by}> · `/itdr {escape(request.command_text())}`")]


def item_line(item: Any, *, purpose_chars: int = 140) -> str:
    """One bullet for lists: name, where it lives, status, and the start of its purpose."""
    status = _text(_value(item, "status"))
    flags = []
    if status and status != "active":
        flags.append(_label(STATUS_LABELS, status).split(" (")[0].lower())
    if _value(item, "cpv_only"):
        flags.append("CPV only")
    if _value(item, "p2_only"):
        flags.append("P2 only")
    flag_text = f" _({', '.join(flags)})_" if flags else ""
    purpose = _value(item, "purpose") or ""
    purpose_text = f" — {escape(truncate(purpose, purpose_chars))}" if purpose else ""
    return f"• `{escape(item.name)}` {escape(item.kind_title)}{flag_text}{purpose_text}"


# ----------------
#  why
# ----------------


def why_message(
    lookup: Any, request: AnswerRequest, *, surface: Surface = Surface.MESSAGE, shared_by: str | None = None
) -> Message:
    item = lookup.item
    if item is None:
        return not_found_message(lookup, surface=surface)
    status = _text(item.status)
    flags = [f"*Status:* {_label(STATUS_LABELS, status)}"]
    if item.cpv_only:
        flags.append("*CPV only* (partner / GDAP tenants)")
    if item.p2_only:
        flags.append("*Needs Entra ID P2*")
    privilege = _text(_value(item.impact, "privilege"))
    if privilege:
        flags.append(f"*Privilege:* {_label(PRIVILEGE_LABELS, privilege)}")

    blocks: list[Block] = [
        header(item.name, BlockId.HEADER),
        section(
            f"*{escape(item.api_title)}* · {escape(item.kind_title)}\n" + " · ".join(flags),
            block_id=BlockId.BODY,
        ),
    ]
    alias = _value(lookup, "matched_alias")
    if alias and alias.casefold() != item.name.casefold():
        blocks.append(context(f"Matched `{escape(alias)}`, another name for `{escape(item.name)}`."))
    if item.purpose:
        blocks.append(section(f"*Why Huntress needs it*\n{escape(item.purpose)}"))
    ms = _value(item, "microsoft")
    ms_name, ms_desc = _value(ms, "display_name"), _value(ms, "description")
    if ms_name or ms_desc:
        title = f"*{escape(ms_name)}*: " if ms_name else ""
        blocks.append(section(f"*What Microsoft says it allows*\n{title}{escape(ms_desc or '')}"))
    impact = _value(item, "impact")
    if impact is not None:
        blocks.append(
            section(f"*If it is missing*\n*{escape(impact.capability_title)}*: {escape(impact.capability_summary)}")
        )
    if item.huntress_adds:
        blocks.append(section(f":information_source: {escape(item.huntress_adds)}"))
    for discrepancy in item.discrepancies:
        label = _label(DISCREPANCY_LABELS, discrepancy.kind)
        blocks.append(section(f":warning: *Discrepancy: {escape(label)}*\n{escape(discrepancy.message)}"))
    revision = f"Introduced in {item.introduced_in}"
    if item.removed_in:
        revision += f" · removed in {item.removed_in}"
    blocks.append(context(revision, block_id=BlockId.FOOTER))
    blocks += _shared_by(shared_by, request)
    blocks += _answer_buttons(request, surface, shared=bool(shared_by))
    fallback = f"{item.name}: {item.api_title} {item.kind_title}, {_label(STATUS_LABELS, status).lower()}."
    if item.purpose:
        fallback += f" {truncate(item.purpose, 300)}"
    return Message(text=fallback, blocks=blocks[:50])


def not_found_message(lookup: Any, *, surface: Surface = Surface.MESSAGE) -> Message:
    query = escape(truncate(lookup.query, 200))
    suggestions: Sequence[Any] = list(lookup.suggestions)[:5]
    blocks: list[Block] = []
    if suggestions:
        blocks.append(section(f"No catalog entry is named `{query}`. Did you mean:", block_id=BlockId.BODY))
        blocks.append(
            actions(
                [
                    _ask_button(s.name, AnswerRequest(cmd=SubCommand.WHY, args=(s.name,)), surface, n)
                    for n, s in enumerate(suggestions)
                ],
                BlockId.SUGGESTIONS,
            )
        )
        text = f"No catalog entry is named {lookup.query}. Did you mean: " + ", ".join(s.name for s in suggestions)
    else:
        blocks.append(
            section(
                f"No catalog entry is named `{query}`, and nothing is close. Try `/itdr search WORDS`.",
                block_id=BlockId.BODY,
            )
        )
        text = f"No catalog entry is named {lookup.query}. Try /itdr search WORDS."
    return Message(text=truncate(text, 3000), blocks=blocks)


# ----------------
#  search
# ----------------


def search_message(
    query: str,
    items: Sequence[Any],
    request: AnswerRequest,
    *,
    surface: Surface = Surface.MESSAGE,
    shared_by: str | None = None,
) -> Message:
    items = list(items)[:SEARCH_LIMIT]
    q = escape(truncate(query, 100))
    if not items:
        return Message(
            text=f"Nothing in the catalog matches {query}.",
            blocks=[
                section(
                    f"Nothing in the catalog matches `{q}`. Try fewer or other words "
                    "(for example `phishing`, `audit`, `CPV`, `future`).",
                    block_id=BlockId.BODY,
                )
            ],
        )
    blocks: list[Block] = [header(f"Search: {truncate(query, 100)}", BlockId.HEADER)]
    for item in items:
        block = section(item_line(item, purpose_chars=200))
        block["accessory"] = _ask_button("Why?", AnswerRequest(cmd=SubCommand.WHY, args=(item.name,)), surface)
        blocks.append(block)
    blocks.append(
        context(f"{len(items)} best match{'es' if len(items) != 1 else ''} for `{q}`.", block_id=BlockId.FOOTER)
    )
    blocks += _shared_by(shared_by, request)
    blocks += _answer_buttons(request, surface, shared=bool(shared_by))
    text = f"Search {query}: " + ", ".join(i.name for i in items)
    return Message(text=truncate(text, 3000), blocks=blocks)


# ----------------
#  versions
# ----------------


def _revision_summary(revision: Any) -> str:
    added, removed = len(revision.added), len(revision.removed)
    return f"+{added} added, −{removed} removed"


def versions_message(
    revisions: Sequence[Any],
    request: AnswerRequest,
    *,
    surface: Surface = Surface.MESSAGE,
    shared_by: str | None = None,
) -> Message:
    revisions = list(revisions)
    latest = revisions[-1] if revisions else None
    blocks: list[Block] = [header("ITDR permission document revisions", BlockId.HEADER)]
    previous = None
    for revision in reversed(revisions[-40:]):
        marker = " (current)" if revision is latest else ""
        lines = [
            f"*{revision.version}*{marker} · {revision.date.isoformat()} — {escape(revision.title)}",
            _revision_summary(revision),
        ]
        lines += [f"_{escape(truncate(note, 300))}_" for note in list(revision.notes)[:2]]
        block = section("\n".join(lines))
        index = revisions.index(revision)
        previous = revisions[index - 1] if index > 0 else None
        if previous is not None:
            block["accessory"] = _ask_button(
                f"Diff {previous.version}→{revision.version}",
                AnswerRequest(cmd=SubCommand.DIFF, args=(previous.version, revision.version)),
                surface,
            )
        blocks.append(block)
    blocks += _shared_by(shared_by, request)
    blocks += _answer_buttons(request, surface, shared=bool(shared_by))
    text = "Revisions: " + "; ".join(f"{r.version} {r.date.isoformat()} {r.title}" for r in reversed(revisions))
    return Message(text=truncate(text, 3000), blocks=blocks)


# ----------------
#  diff
# ----------------


def diff_message(
    diff: Any,
    request: AnswerRequest,
    *,
    notes: Sequence[str] = (),
    surface: Surface = Surface.MESSAGE,
    shared_by: str | None = None,
    page_items: int = DIFF_PAGE_ITEMS,
) -> Message:
    """One page of a diff, grouped by change and API, `page_items` per page; "Show more" for the rest."""
    changes = [("Added", item) for item in diff.added] + [("Removed", item) for item in diff.removed]
    total = len(changes)
    pages = max(1, -(-total // page_items))
    page = min(request.page, pages - 1)
    start = page * page_items
    chunk = changes[start : start + page_items]
    title = f"Changes {diff.from_version} → {diff.to_version}"
    summary = f"+{len(diff.added)} added, −{len(diff.removed)} removed"

    blocks: list[Block] = [header(title if page == 0 else f"{title} (page {page + 1} of {pages})", BlockId.HEADER)]
    if page == 0:
        lines = [f"*{summary}*"]
        lines += [f"_{escape(truncate(note, 400))}_" for note in list(notes)[:3]]
        blocks.append(section("\n".join(lines), block_id=BlockId.BODY))
    if not changes:
        blocks.append(section(f"No permission or role changes between {diff.from_version} and {diff.to_version}."))
    for (change, api_title), group in groupby(chunk, key=lambda c: (c[0], c[1].api_title)):
        icon = ":heavy_plus_sign:" if change == "Added" else ":heavy_minus_sign:"
        lines = [item_line(item) for _, item in group]
        for n, text in enumerate(chunk_lines(lines, 2900)):
            heading = f"{icon} *{change} · {escape(api_title)}*" + (" (cont.)" if n else "")
            blocks.append(section(f"{heading}\n{text}"))
    next_page = page + 1 if page + 1 < pages else None
    if total:
        shown = f"Items {start + 1}–{start + len(chunk)} of {total}"
        if next_page is not None:
            shown += f" · {total - start - len(chunk)} more"
        blocks.append(context(shown, block_id=BlockId.FOOTER))
    blocks += _shared_by(shared_by, request)
    blocks += _answer_buttons(request, surface, shared=bool(shared_by), next_page=next_page)

    names = ", ".join(f"{'+' if c == 'Added' else '−'}{i.name}" for c, i in chunk)
    text = f"{title}: {summary}." + (f" {names}" if names else "")
    if next_page is not None:
        text += f" (page {page + 1} of {pages})"
    return Message(text=truncate(text, 3000), blocks=blocks)


# ----------------
#  help and errors
# ----------------

HELP_LINES = (
    ("why NAME", "what a permission or role is for, what breaks without it (`why Mail.ReadWrite`)"),
    ("search WORDS", "find permissions and roles by keyword (`search phishing`)"),
    ("versions", "the document's revisions, newest first"),
    ("diff [FROM] [TO]", "what changed between revisions (`diff v4 v5`; no arguments: the latest change)"),
    ("check TENANT [vN]", "is the ITDR app ready in a tenant (id or domain)? what is missing, why, how to fix"),
    ("help", "this message"),
)


def help_message(note: str | None = None) -> Message:
    lines = [f"• `/itdr {usage}` — {what}" for usage, what in HELP_LINES]
    blocks: list[Block] = []
    if note:
        blocks.append(section(f":grey_question: {escape(note)}"))
    blocks.append(section("*How to use `/itdr`*\n" + "\n".join(lines), block_id=BlockId.BODY))
    blocks.append(context("Answers are visible only to you; use *Share in channel* to post one."))
    text = (f"{note} " if note else "") + "Usage: " + "; ".join(f"/itdr {u}" for u, _ in HELP_LINES)
    return Message(text=text, blocks=blocks)


def notice_message(text: str) -> Message:
    """A short ephemeral notice (unknown version, already shared, stale button)."""
    return Message(text=text, blocks=[section(escape(text), block_id=BlockId.BODY)])


def error_message(error_id: str) -> Message:
    text = f"Sorry, that did not work (error id {error_id}). Try again; if it keeps failing, quote the id."
    return Message(
        text=text,
        blocks=[
            section(
                f":warning: Sorry, that did not work (error id `{error_id}`). "
                "Try again; if it keeps failing, quote the id."
            )
        ],
    )


__all__ = [
    "Surface",
    "diff_message",
    "error_message",
    "help_message",
    "item_line",
    "not_found_message",
    "notice_message",
    "search_message",
    "versions_message",
    "why_message",
]
