"""Block Kit for a tenant readiness report: verdict first, failures first, each with its fix.

Pure: a `Report` in, a `Message` out. A tenant missing almost everything (no consent yet) would need a section
per item; beyond a handful, failures are grouped per API so the answer stays within 50 blocks and 3000
characters a section, and every missing name is still listed. A reason shared by every check that could not
run (no token, Graph down) is said once.
"""

from __future__ import annotations

import re
from collections import defaultdict

from bot.readiness.evaluate import when_text
from bot.readiness.model import VERDICT_TEXT, CheckGroup, CheckItem, CheckStatus, Report, Verdict
from catalog.words import counted
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
from handlers.payloads import AnswerRequest, StartConsentValue

VERDICT_EMOJI = {
    Verdict.ready: ":white_check_mark:",
    Verdict.degraded: ":large_yellow_circle:",
    Verdict.blocked: ":no_entry:",
    Verdict.unknown: ":grey_question:",
}
MARKS = {CheckStatus.failed: ":x:", CheckStatus.unknown: ":grey_question:", CheckStatus.warn: ":warning:"}
ORDER = {CheckStatus.failed: 0, CheckStatus.unknown: 1, CheckStatus.warn: 2}
GROUP_STATE = {
    CheckStatus.failed: "missing, needed today",
    CheckStatus.warn: "missing, future use",
    CheckStatus.unknown: "could not check",
}
MAX_DETAILED = 8  # item failures shown one by one (with Explain) before grouping kicks in
MAX_EXPLAIN_BUTTONS = 5


def verdict_title(verdict: Verdict) -> str:
    return f"{VERDICT_EMOJI[verdict]} {VERDICT_TEXT[verdict].title}"


def _tenant_line(report: Report) -> str:
    tenant = report.tenant
    label = " · ".join(escape(part) for part in (tenant.name, tenant.domain) if part)
    when = "cached result" if report.cached else f"{report.duration_ms} ms"
    return (
        f"Tenant `{escape(tenant.id)}`{' — ' + label if label else ''} · catalog {report.catalog_version}"
        f" · fully satisfies: {report.satisfied_version or 'none'} · {when}"
    )


#: A fix whose link is Microsoft's admin-consent page (bot.microsoft.tenant.admin_consent_url).
_ADMIN_CONSENT = "/adminconsent?"
START_CONSENT_FIX = ("the approvers decide first (*Start consent*, or `/itdr consent TENANT`); a Global "
                     "Administrator of the tenant then grants admin consent from the request's card.")


def _is_consent_fix(remediation: str | None) -> bool:
    return bool(remediation) and _ADMIN_CONSENT in (remediation or "")


def _fix(remediation: str, start_consent: bool) -> str:
    return START_CONSENT_FIX if start_consent and _is_consent_fix(remediation) else escape(remediation)


def _item_text(item: CheckItem, start_consent: bool = False) -> str:
    lines = [f"{MARKS[item.status]} *{escape(item.title)}*", escape(item.detail)]
    if item.why and item.status is not CheckStatus.unknown:
        lines.append(f"_Why it matters:_ {escape(item.why)}")
    if item.remediation:
        lines.append(f"_Fix:_ {_fix(item.remediation, start_consent)}")
    return "\n".join(lines)


def _explain(item: CheckItem, n: int) -> Block:
    request = AnswerRequest(cmd=SubCommand.WHY, args=(item.catalog_name or "",))
    return button("Explain", numbered(ActionId.ASK, n), request.to_value())


def _link(text: str) -> str | None:
    match = re.search(r"https?://\S+", text)
    return match.group(0) if match else None


def _grouped(items: list[CheckItem], shown_fixes: set[str], start_consent: bool = False) -> list[Block]:
    """One section per API and status: every missing name, the shared reason and their common fix."""
    groups: dict[tuple[CheckStatus, CheckGroup], list[CheckItem]] = defaultdict(list)
    for item in items:
        groups[(item.status, item.group)].append(item)
    blocks: list[Block] = []
    shown_links = {_link(shown) for shown in shown_fixes}
    for (status, group), members in sorted(groups.items(), key=lambda kv: (ORDER[kv[0][0]], kv[0][1].value)):
        names = ", ".join(f"`{escape(m.catalog_name or m.title)}`" for m in members)
        lines = [f"{MARKS[status]} *{group.heading} — {GROUP_STATE[status]} ({len(members)})*", names]
        details = {m.detail for m in members}
        if status is CheckStatus.unknown or len(details) == 1:
            lines.append(escape(truncate(next(iter(details)), 500)))
        fixes = {m.remediation for m in members if m.remediation}
        if len(fixes) == 1:
            fix = next(iter(fixes)) or ""
            # With the app missing, every permission's fix is the consent link already shown once above.
            if _link(fix) and _link(fix) in shown_links:
                lines.append("_Fix:_ the admin consent above.")
            else:
                lines.append(f"_Fix:_ {_fix(fix, start_consent)}")
        elif fixes:
            lines.append("_Fix:_ see *Explain* or `itdr check --json` for each item's command.")
        blocks += [section(chunk) for chunk in chunk_lines(lines)]
    return blocks


def _ending_roles(report: Report) -> list[str]:
    """Roles held today through time-bound assignments: what breaks, and when, before it does."""
    ending = sorted(report.role_ends.items(), key=lambda pair: pair[1])
    target = escape(report.tenant.domain or report.tenant.id)
    return [
        f":hourglass_flowing_sand: *Roles that end ({len(ending)})*",
        *(f"`{escape(name)}`: held until {when_text(end)} (a time-bound assignment)" for name, end in ending),
        f"Huntress loses each role when its assignment ends. _Fix:_ make it permanent (`/itdr fix {target}`).",
    ]


def check_message(
    report: Report, request: AnswerRequest, *, shared_by: str | None = None, start_consent: bool = False
) -> Message:
    """The report. `start_consent` (approvers are configured): a missing consent is fixed by the approvers'
    workflow, so the answer offers "Start consent" instead of the raw admin-consent link."""
    verdict = report.verdict
    common = report.common_failure
    problems = sorted((i for i in report.items if i.status in ORDER and not (common and i.status is
                                                                               CheckStatus.unknown)),
                      key=lambda i: ORDER[i.status])
    general = [i for i in problems if not i.catalog_name]
    per_item = [i for i in problems if i.catalog_name]

    blocks: list[Block] = [
        header(verdict_title(verdict), BlockId.HEADER),
        section(VERDICT_TEXT[verdict].meaning, block_id=BlockId.BODY),
        context(_tenant_line(report)),
    ]
    if common:
        unchecked = sum(1 for i in report.items if i.status is CheckStatus.unknown)
        blocks.append(section(f"{MARKS[CheckStatus.unknown]} *{counted(unchecked, 'check')} could not run*\n"
                              f"{escape(common)}"))
    blocks += [section(_item_text(item, start_consent)) for item in general]
    if len(per_item) <= MAX_DETAILED:
        for n, item in enumerate(per_item):
            block = section(_item_text(item, start_consent))
            if not shared_by:
                block["accessory"] = _explain(item, n)
            blocks.append(block)
    else:
        blocks += _grouped(per_item, {i.remediation for i in general if i.remediation}, start_consent)
        explainable = [i for i in per_item if i.status is CheckStatus.failed][:MAX_EXPLAIN_BUTTONS]
        if explainable and not shared_by:
            blocks.append(actions([_explain(i, n) for n, i in enumerate(explainable)], BlockId.CHECK_EXPLAIN))

    if report.role_ends:
        blocks += [section(chunk) for chunk in chunk_lines(_ending_roles(report))]

    passed = sum(1 for i in report.items if i.status is CheckStatus.passed)
    not_applicable = sum(1 for i in report.items if i.status is CheckStatus.not_applicable)
    summary = f"{counted(passed, 'check')} passed"
    summary += f", {not_applicable} not applicable (CPV only)" if not_applicable else ""
    summary += f" · {counted(report.round_trips, 'Microsoft round trip')}"
    if report.checked_at:
        summary += f" · checked {report.checked_at}"
    blocks.append(context(summary, block_id=BlockId.FOOTER))
    if shared_by:
        blocks.append(context(f"Shared by <@{shared_by}> · `/itdr {escape(request.command_text())}`"))
    else:
        elements = [
            button("Re-check", ActionId.RECHECK, request.to_value(), style="primary"),
            button("Share in channel", ActionId.SHARE, request.to_value()),
        ]
        if start_consent and any(_is_consent_fix(i.remediation) for i in problems):
            wanted = StartConsentValue(tenant=report.tenant.id, version=report.catalog_version)
            elements.insert(1, button("Start consent", ActionId.CONSENT_START, wanted.to_value()))
        blocks.append(actions(elements, BlockId.ANSWER_ACTIONS))

    tenant = report.tenant
    missing = sum(1 for i in report.items if i.status in (CheckStatus.failed, CheckStatus.warn))
    unknown = sum(1 for i in report.items if i.status is CheckStatus.unknown)
    text = (f"{VERDICT_TEXT[verdict].title}: tenant {escape(tenant.domain or tenant.id)}, {missing} missing, "
            f"{unknown} could not be checked.")
    return Message(text=text, blocks=blocks[:50])
