"""Block Kit for a tenant readiness report: verdict first, failures first, each with its fix.

Pure: a report (its JSON form) in, a `Message` out. A tenant missing almost everything (no consent yet) would
need a section per item; beyond a handful, failures are grouped per API so the answer stays within 50 blocks
and 3000 characters a section, and every missing name is still listed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

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

VERDICT_HEADERS = {
    "ready": ":white_check_mark: Ready",
    "degraded": ":large_yellow_circle: Degraded",
    "blocked": ":no_entry: Blocked",
    "unknown": ":grey_question: Could not check everything",
}
VERDICT_LINES = {
    "ready": "Every check passed: the ITDR integration can do its job in this tenant.",
    "degraded": "Today's job works; future-use items, the P2 licence or warnings remain.",
    "blocked": "Something the integration needs today is missing. Fix the items marked :x: first.",
    "unknown": "Some checks could not be completed, so this is *not* a pass. The reasons are below.",
}
MARKS = {"fail": ":x:", "unknown": ":grey_question:", "warn": ":warning:"}
ORDER = {"fail": 0, "unknown": 1, "warn": 2}
GROUP_TITLES = {
    "graph": "Microsoft Graph permissions",
    "exchange": "Exchange Online permissions",
    "o365_management": "Office 365 Management API permissions",
    "partner_center": "Partner Center permissions",
    "entra_role": "Entra directory roles",
    "exchange_role_group": "Organization Management roles",
}
MAX_DETAILED = 8  # item failures shown one by one (with Explain) before grouping kicks in
MAX_EXPLAIN_BUTTONS = 5


def _tenant_line(report: dict[str, Any]) -> str:
    tenant = report["tenant"]
    label = " · ".join(escape(str(part)) for part in (tenant.get("name"), tenant.get("domain")) if part)
    satisfied = report.get("satisfied_version") or "none"
    when = "cached result" if report.get("cached") else f"{report.get('duration_ms', 0)} ms"
    return (
        f"Tenant `{escape(tenant['id'])}`{' — ' + label if label else ''} · catalog {report['catalog_version']}"
        f" · fully satisfies: {satisfied} · {when}"
    )


def _item_text(item: dict[str, Any]) -> str:
    lines = [f"{MARKS[item['status']]} *{escape(item['title'])}*", escape(item["detail"])]
    if item.get("why") and item["status"] != "unknown":
        lines.append(f"_Why it matters:_ {escape(item['why'])}")
    if item.get("remediation"):
        lines.append(f"_Fix:_ {escape(item['remediation'])}")
    return "\n".join(lines)


def _explain(item: dict[str, Any], n: int) -> Block:
    request = AnswerRequest(cmd=SubCommand.WHY, args=(item["catalog_name"],))
    return button("Explain", numbered(ActionId.ASK, n), request.to_value())


def _link(text: str) -> str | None:
    match = re.search(r"https?://\S+", text)
    return match.group(0) if match else None


def _grouped(items: list[dict[str, Any]], shown_fixes: set[str]) -> list[Block]:
    """One section per API and status: every missing name, the shared reason and their common fix."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        groups[(item["status"], item["group"])].append(item)
    blocks: list[Block] = []
    for (status, group), members in sorted(groups.items(), key=lambda kv: (ORDER[kv[0][0]], kv[0][1])):
        names = ", ".join(f"`{escape(m['catalog_name'])}`" for m in members)
        kind = {"fail": "missing, needed today", "warn": "missing, future use", "unknown": "could not check"}[status]
        lines = [f"{MARKS[status]} *{GROUP_TITLES.get(group, group)} — {kind} ({len(members)})*", names]
        details = {m["detail"] for m in members}
        if status == "unknown" or len(details) == 1:
            lines.append(escape(truncate(next(iter(details)), 500)))
        fixes = {m.get("remediation") for m in members if m.get("remediation")}
        if len(fixes) == 1:
            fix = next(iter(fixes)) or ""
            # With the app missing, every permission's fix is the consent link already shown once above.
            if _link(fix) and _link(fix) in {_link(shown) for shown in shown_fixes}:
                lines.append("_Fix:_ the admin consent above.")
            else:
                lines.append(f"_Fix:_ {escape(fix)}")
        elif fixes:
            lines.append("_Fix:_ see *Explain* or `itdr check --json` for each item's command.")
        blocks += [section(chunk) for chunk in chunk_lines(lines)]
    return blocks


def check_message(report: dict[str, Any], request: AnswerRequest, *, shared_by: str | None = None) -> Message:
    verdict = report["verdict"]
    items = report["items"]
    problems = sorted((i for i in items if i["status"] in ORDER), key=lambda i: ORDER[i["status"]])
    general = [i for i in problems if not i.get("catalog_name")]
    per_item = [i for i in problems if i.get("catalog_name")]

    blocks: list[Block] = [
        header(VERDICT_HEADERS[verdict], BlockId.HEADER),
        section(VERDICT_LINES[verdict], block_id=BlockId.BODY),
        context(_tenant_line(report)),
    ]
    blocks += [section(_item_text(item)) for item in general]
    if len(per_item) <= MAX_DETAILED:
        for n, item in enumerate(per_item):
            block = section(_item_text(item))
            if not shared_by:
                block["accessory"] = _explain(item, n)
            blocks.append(block)
    else:
        blocks += _grouped(per_item, {i["remediation"] for i in general if i.get("remediation")})
        explainable = [i for i in per_item if i["status"] == "fail"][:MAX_EXPLAIN_BUTTONS]
        if explainable and not shared_by:
            blocks.append(actions([_explain(i, n) for n, i in enumerate(explainable)], BlockId.CHECK_EXPLAIN))

    passed = sum(1 for i in items if i["status"] == "pass")
    not_applicable = sum(1 for i in items if i["status"] == "n/a")
    summary = f"{passed} checks passed" + (f", {not_applicable} not applicable (CPV only)" if not_applicable else "")
    summary += f" · {report.get('round_trips', 0)} Microsoft round trips"
    if report.get("checked_at"):
        summary += f" · checked {report['checked_at']}"
    blocks.append(context(summary, block_id=BlockId.FOOTER))
    if shared_by:
        blocks.append(context(f"Shared by <@{shared_by}> · `/itdr {escape(request.command_text())}`"))
    else:
        blocks.append(actions([
            button("Re-check", ActionId.RECHECK, request.to_value(), style="primary"),
            button("Share in channel", ActionId.SHARE, request.to_value()),
        ], BlockId.ANSWER_ACTIONS))

    tenant = report["tenant"]
    missing = sum(1 for i in items if i["status"] in ("fail", "warn"))
    text = (f"{VERDICT_HEADERS[verdict].split(' ', 1)[1]}: tenant {tenant.get('domain') or tenant['id']}, "
            f"{missing} missing, {sum(1 for i in items if i['status'] == 'unknown')} could not be checked.")
    return Message(text=text, blocks=blocks[:50])
