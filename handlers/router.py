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
