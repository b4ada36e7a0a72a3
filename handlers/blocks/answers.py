"""Builders for `/itdr` answers: why, did-you-mean, search, versions, diff (one message, paged only as a fallback)
and help.

Every builder is pure: catalog objects in, a `Message` out. `surface` decides which buttons an answer
carries: in a message, "Share in channel" / did-you-mean / "Show more"; on the Home tab, Home buttons that
republish the tab (there is no response_url there); `shared=True` renders the visible copy without a
Share button.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from catalog import DISCREPANCY_LABELS, PRIVILEGE_LABELS, STATUS_LABELS, Diff, DiffLayout, PurposeGroup, diff_layout
from catalog.words import counted
from handlers.blocks.kit import (
    MAX_FALLBACK_TEXT,
    MAX_SECTION_TEXT,
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

# A diff page: at most this many sections (header, summary, footer, "shared by" and buttons take the other 5 of
# Slack's 50 blocks) and characters of section text. Every revision pair of the document fits one page.
DIFF_PAGE_SECTIONS = 45
DIFF_PAGE_CHARS = 12_000
DIFF_PURPOSE_CHARS = 300
DIFF_NAMES_LINE_CHARS = 2_000  # a group's names wrap onto a new line only past this
DIFF_INDENT = "\u2003\u2003"  # em spaces: Slack keeps them, so names sit under their group line
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


def _flag_note(flags: Sequence[str]) -> str:
    return f" _({', '.join(flags)})_" if flags else ""


# A line of mrkdwn and the item names it shows (so pages and the fallback text know what they hold).
_Line = tuple[str, tuple[str, ...]]


def _group_lines(group: PurposeGroup, *, where: bool) -> list[_Line]:
    """One purpose group as mrkdwn lines, each with the names it shows.

    A one-item group is one bullet (name — purpose). A larger group is a bullet with the count, a name summary
    and the shared purpose, then every name, backticked and comma-separated, on indented lines short enough
    never to be cut by `chunk_lines`.
    """
    place = f" · {escape(group.where)}" if where and group.where else ""
    label = escape(truncate(group.label, DIFF_PURPOSE_CHARS))
    if len(group.items) == 1:
        (item,) = group.items
        return [(f"• `{escape(item.name)}`{_flag_note(group.flags)} — {label}{place}", (item.name,))]
    summary = group.summary.format(lambda pattern: f"`{escape(pattern)}`") or "items"
    names: list[str]
    lines: list[_Line] = [(f"• *{len(group.items)}* {summary}{_flag_note(group.flags)}: {label}{place}", ())]
    line, names = "", []  # the names line being filled, and the names on it
    for item in group.items:
        entry = f"`{escape(item.name)}`{_flag_note(group.flags_of(item))}"
        if line and len(line) + len(entry) + 2 > DIFF_NAMES_LINE_CHARS:
            lines.append((f"{DIFF_INDENT}{line},", tuple(names)))
            line, names = "", []
        line = f"{line}, {entry}" if line else entry
        names.append(item.name)
    lines.append((f"{DIFF_INDENT}{line}", tuple(names)))
    return lines


def _diff_sections(layout: DiffLayout) -> list[_Line]:
    """Every section of a diff (removed side first, then added), each text ≤ 3000 chars, with its names."""
    sections: list[_Line] = []
    for side in layout.sides:
        icon = ":heavy_minus_sign:" if side.change == "removed" else ":heavy_plus_sign:"
        heading = f"{icon} *{side.title} ({len(side.items)})*" + (f" · {escape(side.where)}" if side.where else "")
        lines = [line for group in side.groups for line in _group_lines(group, where=side.where is None)]
        texts = chunk_lines([text for text, _ in lines], MAX_SECTION_TEXT - len(heading) - 20)
        taken = 0
        for n, text in enumerate(texts):
            count = text.count("\n") + 1  # chunk_lines keeps whole lines, in order
            names = tuple(name for _, line_names in lines[taken : taken + count] for name in line_names)
            taken += count
            sections.append((f"{heading}{' (cont.)' if n else ''}\n{text}", names))
    return sections


def _diff_pages(sections: list[_Line]) -> list[list[_Line]]:
    """Sections packed into pages (≤ DIFF_PAGE_SECTIONS sections, ≤ DIFF_PAGE_CHARS characters each), in order."""
    pages: list[list[_Line]] = [[]]
    size = 0
    for section_ in sections:
        full = len(pages[-1]) >= DIFF_PAGE_SECTIONS or size + len(section_[0]) > DIFF_PAGE_CHARS
        if pages[-1] and full:
            pages.append([])
            size = 0
        pages[-1].append(section_)
        size += len(section_[0])
    return pages


def _diff_fallback(layout: DiffLayout, names: Sequence[str], page: int, pages: int) -> str:
    """The notification text: title, summary, then the changed names shown, removed first (all of them when they
    fit in 3000 characters; otherwise whole names up to the limit and how many more)."""
    head = f"{layout.title}: {layout.summary}."
    suffix = f" (page {page + 1} of {pages})" if pages > 1 else ""
    shown = set(names)
    sides = [(side.title, [item.name for item in side.items if item.name in shown]) for side in layout.sides]
    sides = [(title, side_names) for title, side_names in sides if side_names]
    text = head + "".join(f" {title}: {', '.join(side_names)}." for title, side_names in sides)
    if len(text + suffix) <= MAX_FALLBACK_TEXT:
        return text + suffix
    text, left = head, len(shown)
    for title, side_names in sides:
        for n, name in enumerate(side_names):
            piece = f"{' ' + title + ':' if n == 0 else ','} {name}"
            if len(text + piece + f" … and {left - 1} more." + suffix) > MAX_FALLBACK_TEXT:
                return text + f" … and {left} more." + suffix
            text, left = text + piece, left - 1
        text += "."
    return text + suffix


def diff_message(
    diff: Diff,
    request: AnswerRequest,
    *,
    notes: Sequence[str] = (),
    surface: Surface = Surface.MESSAGE,
    shared_by: str | None = None,
) -> Message:
    """A diff in one message: removed items first, then added ones grouped by shared purpose, every name shown.

    Only a diff too big for one message (none of the document's revisions is) pages with "Show more".
    """
    layout = diff_layout(diff)
    pages = _diff_pages(_diff_sections(layout))
    page = min(request.page, len(pages) - 1)
    chunk = pages[page]
    title = layout.title

    blocks: list[Block] = [
        header(title if page == 0 else f"{title} (page {page + 1} of {len(pages)})", BlockId.HEADER)
    ]
    if page == 0:
        lines = [f"*{layout.summary}*"]
        lines += [f"_{escape(truncate(note, 400))}_" for note in list(notes)[:3]]
        blocks.append(section("\n".join(lines), block_id=BlockId.BODY))
    if not layout.sides:
        blocks.append(section(f"No permission or role changes between {diff.from_version} and {diff.to_version}."))
    blocks += [section(text) for text, _ in chunk]
    names = [name for _, section_names in chunk for name in section_names]
    next_page = page + 1 if page + 1 < len(pages) else None
    if len(pages) > 1:
        blocks.append(
            context(
                f"Page {page + 1} of {len(pages)} · {len(names)} of {counted(len(layout.names), 'change')} on this "
                "page",
                block_id=BlockId.FOOTER,
            )
        )
    blocks += _shared_by(shared_by, request)
    blocks += _answer_buttons(request, surface, shared=bool(shared_by), next_page=next_page)
    return Message(text=_diff_fallback(layout, names, page, len(pages)), blocks=blocks)


# ----------------
#  help and errors
# ----------------

HELP_LINES = (
    ("why NAME", "what a permission or role is for, what breaks without it (`why Mail.ReadWrite`)"),
    ("search WORDS", "find permissions and roles by keyword (`search phishing`)"),
    ("versions", "the document's revisions, newest first"),
    ("diff [FROM] [TO]", "what changed between revisions (`diff v4 v5`; no arguments: the latest change)"),
    ("check TENANT [vN]", "is the ITDR app ready in a tenant (id or domain)? what is missing, why, how to fix"),
    ("consent TENANT [vN]", "ask the approvers, in this channel, to consent to a revision for a tenant"),
    ("audit TENANT", "who requested, approved, denied and granted consent for a tenant, and when"),
    ("watch TENANT [#channel]", "post here (or there) when the tenant loses or regains a permission or role"),
    ("unwatch TENANT", "stop watching a tenant in this channel"),
    ("watching", "the tenants this channel watches, their verdicts and when they were read"),
    ("fleet", "every watched tenant: verdicts, what is most often missing, blocked and stale tenants"),
    ("fix TENANT [vN]", "the tenant's fix plan in this channel: ordered steps, who, commands, Microsoft's wait, "
                        "and a re-check that comes back after the wait"),
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


def mrkdwn_notice(text: str) -> Message:
    """A notice written in mrkdwn (a channel or user mention, a link) whose untrusted parts (tenant names,
    domains) the caller escaped: the same text in the block and the fallback, so neither can ping or link."""
    return Message(text=text, blocks=[section(text, block_id=BlockId.BODY)])


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
