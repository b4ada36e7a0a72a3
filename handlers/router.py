"""The `/itdr` sub-command router: text → `AnswerRequest` → `Message`.

Shared by the slash command, every answer button, the Home tab and the console, so an answer looks the
same however it was asked for.
"""

from __future__ import annotations

from typing import Any

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


def parse_command(text: str | None) -> tuple[AnswerRequest, str | None]:
    """Parse `/itdr` text. Unknown or incomplete input becomes `help` plus a note saying why."""
    words = (text or "").split()
    if not words:
        return AnswerRequest(cmd=SubCommand.HELP), None
    head, rest = words[0].lower(), words[1:]
    try:
        cmd = SubCommand(head)
    except ValueError:
        return AnswerRequest(cmd=SubCommand.HELP), f"Unknown sub-command `{head[:40]}`."
    if cmd in (SubCommand.WHY, SubCommand.SEARCH):
        if not rest:
            return AnswerRequest(
                cmd=SubCommand.HELP
            ), f"`{cmd.value}` needs a {'name' if cmd is SubCommand.WHY else 'word'}."
        return AnswerRequest(cmd=cmd, args=(" ".join(rest)[:MAX_QUERY],)), None
    if cmd is SubCommand.CHECK:
        if not rest or len(rest) > 2:
            return AnswerRequest(cmd=SubCommand.HELP), "`check` needs a tenant id or domain, and optionally a revision."
        return AnswerRequest(cmd=cmd, args=tuple(r[:MAX_QUERY] for r in rest)), None
    if cmd is SubCommand.DIFF:
        if len(rest) > 2:
            return AnswerRequest(cmd=SubCommand.HELP), "`diff` takes at most two versions."
        return AnswerRequest(cmd=cmd, args=tuple(r[:20] for r in rest)), None
    return AnswerRequest(cmd=cmd), None


def render(
    catalog: Any,
    request: AnswerRequest,
    *,
    surface: Surface = Surface.MESSAGE,
    shared_by: str | None = None,
    note: str | None = None,
) -> Message:
    """Answer `request` from the catalog (pure: no I/O beyond the catalog's cached data)."""
    from catalog import UnknownVersion

    kwargs = {"surface": surface, "shared_by": shared_by}
    match request.cmd:
        case SubCommand.WHY:
            return why_message(catalog.lookup(request.args[0]), request, **kwargs)
        case SubCommand.SEARCH:
            return search_message(request.args[0], catalog.search(request.args[0], limit=10), request, **kwargs)
        case SubCommand.VERSIONS:
            return versions_message(catalog.revisions, request, **kwargs)
        case SubCommand.DIFF:
            try:
                diff = catalog.diff(*request.args)
                forward = int(diff.to_version[1:]) == int(diff.from_version[1:]) + 1
                notes = catalog.revision(diff.to_version).notes if forward else ()
            except UnknownVersion as exc:
                return notice_message(str(exc))
            return diff_message(diff, request, notes=notes, **kwargs)
    return help_message(note)


async def answer(
    catalog: Any,
    readiness: Any,
    request: AnswerRequest,
    *,
    fresh: bool = False,
    shared_by: str | None = None,
    note: str | None = None,
) -> Message:
    """Like `render`, but also answers `check`, which asks Microsoft (async, may take seconds)."""
    if request.cmd is not SubCommand.CHECK:
        return render(catalog, request, shared_by=shared_by, note=note)
    problem = check_problem(catalog, readiness, request)
    if problem:
        return notice_message(problem)
    report = await readiness.check(*request.args, fresh=fresh)
    return check_message(report.to_json(), request, shared_by=shared_by)


def check_problem(catalog: Any, readiness: Any, request: AnswerRequest) -> str | None:
    """Why a `check` cannot run (bad tenant, unknown revision, not configured), in words for the user."""
    from bot.microsoft.tenant import parse_tenant
    from catalog import UnknownVersion

    if readiness is None:
        return ("The tenant readiness check is not configured here: an operator sets ITDR_CLIENT_ID, "
                "ITDR_CLIENT_SECRET (or ITDR_CLIENT_CERTIFICATE) and ITDR_TARGET_APP_ID.")
    try:
        parse_tenant(request.args[0])
        if len(request.args) > 1:
            catalog.revision(request.args[1])
    except UnknownVersion as exc:
        return str(exc)
    except ValueError as exc:  # InvalidTenant: a friendly message that does not echo the input
        return str(exc)
    return None
