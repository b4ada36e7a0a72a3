"""The `/itdr` sub-command router: text → `AnswerRequest` → `Message`.

Shared by the slash command, every answer button, the Home tab and the console, so an answer looks the
same however it was asked for.
"""

from __future__ import annotations

import functools
import re

from bot.microsoft.errors import InvalidTenant
from bot.readiness.service import CheckRequest, ReadinessService
from catalog import Catalog, UnknownVersion
from handlers.blocks.answers import (
    Surface,
    diff_message,
    help_message,
    notice_message,
    search_message,
    versions_message,
    why_message,
)
from handlers.blocks.check import check_message
from handlers.blocks.kit import Message
from handlers.ids import SubCommand
from handlers.payloads import AnswerRequest

MAX_QUERY = 200
NOT_CONFIGURED = ("The tenant readiness check is not configured here: an operator sets ITDR_CLIENT_ID, "
                  "ITDR_CLIENT_SECRET (or ITDR_CLIENT_CERTIFICATE) and ITDR_TARGET_APP_ID.")


_LINK = re.compile(r"<(?:https?://|mailto:)[^|>]*\|([^>]*)>|<(?:https?://|mailto:)([^|>]*)>")


def unescape(text: str) -> str:
    """Command text as typed: Slack (should_escape) wraps links as <http://x|x> and escapes &, < and >; channel
    links (<#C…|name>) stay as they are for the sub-commands that take a channel."""
    text = _LINK.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def parse_command(text: str | None) -> tuple[AnswerRequest, str | None]:
    """Parse `/itdr` text. Unknown or incomplete input becomes `help` plus a note saying why."""
    words = unescape(text or "").split()
    if not words:
        return AnswerRequest(cmd=SubCommand.HELP), None
    head, rest = words[0].lower(), words[1:]
    try:
        cmd = SubCommand(head)
    except ValueError:
        return AnswerRequest(cmd=SubCommand.HELP), f"Unknown sub-command `{head[:40]}`."
    if cmd in (SubCommand.WHY, SubCommand.SEARCH):
        if not rest:
            what = "name" if cmd is SubCommand.WHY else "word"
            return AnswerRequest(cmd=SubCommand.HELP), f"`{cmd.value}` needs a {what}."
        return AnswerRequest(cmd=cmd, args=(" ".join(rest)[:MAX_QUERY],)), None
    if cmd in (SubCommand.CHECK, SubCommand.CONSENT, SubCommand.FIX):
        if not rest or len(rest) > 2:
            return AnswerRequest(cmd=SubCommand.HELP), (f"`{cmd.value}` needs a tenant id or domain, and optionally "
                                                        "a revision.")
        return AnswerRequest(cmd=cmd, args=tuple(r[:MAX_QUERY] for r in rest)), None
    if cmd in (SubCommand.AUDIT, SubCommand.UNWATCH):
        if len(rest) != 1:
            return AnswerRequest(cmd=SubCommand.HELP), f"`{cmd.value}` needs a tenant id or domain."
        return AnswerRequest(cmd=cmd, args=(rest[0][:MAX_QUERY],)), None
    if cmd is SubCommand.WATCH:
        if not rest or len(rest) > 2:
            return AnswerRequest(cmd=SubCommand.HELP), ("`watch` needs a tenant id or domain, and optionally a "
                                                        "#channel.")
        return AnswerRequest(cmd=cmd, args=tuple(r[:MAX_QUERY] for r in rest)), None
    if cmd is SubCommand.DIFF:
        if len(rest) > 2:
            return AnswerRequest(cmd=SubCommand.HELP), "`diff` takes at most two versions."
        return AnswerRequest(cmd=cmd, args=tuple(r[:20] for r in rest)), None
    return AnswerRequest(cmd=cmd), None


def render(
    catalog: Catalog,
    request: AnswerRequest,
    *,
    surface: Surface = Surface.MESSAGE,
    shared_by: str | None = None,
    note: str | None = None,
) -> Message:
    """Answer a catalog question (pure and fast: it fits inside the ack). `check` is answered by `answer_check`."""
    match request.cmd:
        case SubCommand.WHY:
            return why_message(catalog.lookup(request.args[0]), request, surface=surface, shared_by=shared_by)
        case SubCommand.SEARCH:
            items = catalog.search(request.args[0], limit=10)
            return search_message(request.args[0], items, request, surface=surface, shared_by=shared_by)
        case SubCommand.VERSIONS:
            return versions_message(catalog.revisions, request, surface=surface, shared_by=shared_by)
        case SubCommand.DIFF:
            try:
                diff = catalog.diff(*request.args)
            except UnknownVersion as exc:
                return notice_message(str(exc))
            forward = catalog.revision(diff.to_version).number == catalog.revision(diff.from_version).number + 1
            notes = catalog.revision(diff.to_version).notes if forward else ()
            return diff_message(diff, request, notes=notes, surface=surface, shared_by=shared_by)
    return help_message(note)


@functools.lru_cache(maxsize=512)
def render_command(catalog: Catalog, request: AnswerRequest, note: str | None) -> Message:
    """`render` for the slash command, memoised per parsed question: a catalog never changes while a process runs,
    so the same question always gets the same answer, and a typo's fuzzy search (most of a request's CPU) runs once.

    Keyed on the parsed request, not the raw text, so spacing and case variants cannot fill the cache with copies
    of large answers. The Message is shared between requests: callers only read it (Bolt copies what it sends).
    """
    return render(catalog, request, note=note)


def prepare_check(readiness: ReadinessService | None, request: AnswerRequest) -> CheckRequest | str:
    """Validate a `check` once: the CheckRequest to run, or why it cannot run, in words for the user."""
    if readiness is None:
        return NOT_CONFIGURED
    try:
        return readiness.request(*request.args[:2])
    except UnknownVersion as exc:
        return str(exc)
    except InvalidTenant as exc:  # a friendly message that does not echo the input
        return exc.message


async def answer_check(
    readiness: ReadinessService, check: CheckRequest, request: AnswerRequest, *, fresh: bool = False,
    shared_by: str | None = None, start_consent: bool = False,
) -> Message:
    """Run (or reuse) a readiness check and render it; a Microsoft fault becomes an honest "could not check".
    `start_consent` (approvers are configured): a missing consent is fixed through "Start consent" (the approvers'
    workflow), not the raw admin-consent link."""
    report = await readiness.run(check, fresh=fresh)
    return check_message(report, request, shared_by=shared_by, start_consent=start_consent)


async def answer(
    catalog: Catalog,
    readiness: ReadinessService | None,
    request: AnswerRequest,
    *,
    fresh: bool = False,
    shared_by: str | None = None,
    start_consent: bool = False,
) -> Message:
    """Any answer, `check` included (for buttons that repeat a question: Share, Re-check)."""
    if request.cmd is not SubCommand.CHECK:
        return render(catalog, request, shared_by=shared_by)
    check = prepare_check(readiness, request)
    if isinstance(check, str):
        return notice_message(check)
    assert readiness is not None
    return await answer_check(readiness, check, request, fresh=fresh, shared_by=shared_by,
                              start_consent=start_consent)
