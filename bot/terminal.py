"""Plain-text renderings of catalog answers for the terminal (`itdr` without `--json`)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

from bot.readiness.evaluate import when_text
from bot.readiness.fix import Plan
from bot.readiness.model import VERDICT_TEXT, CheckStatus, Report
from catalog import Catalog, Diff, Item, Lookup, PurposeGroup, Revision, diff_layout
from catalog.words import counted

WIDTH = 100


def _wrap(label: str, text: str) -> list[str]:
    indent = " " * 14
    lines = textwrap.wrap(text, WIDTH, initial_indent=f"{label:<14}", subsequent_indent=indent)
    return lines or [label]


def flags(item: Item) -> list[str]:
    words = []
    if item.cpv_only:
        words.append("CPV integrations only")
    if item.p2_only:
        words.append("needs Entra ID P2")
    if item.huntress_adds:
        words.append("Huntress assigns it during onboarding")
    return words


def revision_label(catalog: Catalog, version: str) -> str:
    revision = catalog.revision(version)
    return f"{revision.version} ({revision.date.isoformat()}, {revision.title})"


def render_item(catalog: Catalog, item: Item) -> str:
    lines = [f"{item.name}  ·  {item.api_title} {item.kind_title}", ""]
    lines += _wrap("Status", item.status_label)
    introduced = revision_label(catalog, item.introduced_in)
    if item.introduced_basis == "inferred":
        introduced += "; the document lists nothing for v1, so this is inferred"
    lines += _wrap("Introduced", introduced)
    if item.removed_in:
        lines += _wrap("Removed", revision_label(catalog, item.removed_in))
    if item_flags := flags(item):
        lines += _wrap("Flags", ", ".join(item_flags))
    lines += _wrap("Purpose", f'"{item.purpose}" (vendor\'s words)' if item.purpose else "not in the current document")
    meaning = item.microsoft
    if meaning.display_name or meaning.description:
        text = " — ".join(part for part in (meaning.display_name, meaning.description) if part)
        if meaning.description_applies_to:
            text += f" (Microsoft's text for {meaning.description_applies_to})"
        lines += _wrap("Microsoft", text)
    lines += _wrap("If missing", f"{item.impact.capability_title}: {item.impact.capability_summary}")
    lines += _wrap("Privilege", item.impact.privilege_label)
    lines += _wrap("Identifiers", ", ".join(f"{key} {value}" for key, value in _ids(item)))
    for discrepancy in item.discrepancies:
        lines += _wrap("Document", f"[{discrepancy.label}] {discrepancy.message}")
    return "\n".join(lines)


def _ids(item: Item) -> Iterable[tuple[str, str]]:
    labels = {
        "resource_app_id": "resource appId",
        "application_id": "app role id",
        "delegated_id": "scope id",
        "template_id": "role template id",
        "management_role_name": "Exchange role",
    }
    for key, value in item.ids.model_dump(exclude_none=True).items():
        yield labels[key], value


def render_not_found(catalog: Catalog, lookup: Lookup) -> str:
    if not lookup.suggestions:
        return (
            f"Nothing in the ITDR catalog is called {lookup.query!r}, and nothing is close.\n"
            "Try `itdr search WORDS` (e.g. `itdr search audit`) to search purposes and descriptions."
        )
    best, *others = lookup.suggestions
    lines = [f"Nothing in the ITDR catalog is called {lookup.query!r}. Closest match: {best.name}.", ""]
    lines.append(render_item(catalog, best))
    if others:
        lines += ["", "Other close names: " + ", ".join(item.name for item in others)]
    return "\n".join(lines)


def _short_status(item: Item) -> str:
    """The status label without its explanation, for one-line listings ("Future use")."""
    return item.status_label.split(" (")[0]


def render_item_line(item: Item) -> str:
    tags = [_short_status(item), *flags(item)]
    purpose = item.purpose or item.microsoft.display_name or ""
    return f"{item.name:<48} {item.api_title:<28} {'; '.join(tags)}\n    {textwrap.shorten(purpose, 92)}"


def render_items(items: list[Item], empty: str) -> str:
    return "\n".join(render_item_line(item) for item in items) if items else empty


def render_versions(revisions: list[Revision]) -> str:
    lines = []
    for revision in reversed(revisions):
        lines.append(f"{revision.version}  {revision.date.isoformat()}  {revision.title}")
        basis = " (inferred)" if revision.added_basis == "inferred" else ""
        lines.append(f"    added {len(revision.added)}{basis}, removed {len(revision.removed)}")
        lines.extend(f"    note: {note}" for note in revision.notes)
    return "\n".join(lines)


def _diff_group(sign: str, group: PurposeGroup, *, where: bool) -> list[str]:
    """A purpose group for the terminal: "name — purpose" for one item; for more, the count, a name summary and the
    purpose, then every name, comma-separated and wrapped under it."""
    place = f" [{group.where}]" if where and group.where else ""
    if len(group.items) == 1:
        (item,) = group.items
        flags = "".join(f" ({flag})" for flag in group.flags)
        return _diff_wrap(f"  {sign} ", f"{item.name}{flags} — {group.label}{place}", 4)
    summary = group.summary.format() or "items"
    flags = "".join(f" ({flag})" for flag in group.flags)
    lines = _diff_wrap(f"  {sign} ", f"{len(group.items)} {summary}{flags}: {group.label}{place}", 4)
    names = ", ".join(item.name + "".join(f" ({f})" for f in group.flags_of(item)) for item in group.items)
    return lines + _diff_wrap(" " * 6, names, 6)


def _diff_wrap(first: str, text: str, indent: int) -> list[str]:
    # Names hold hyphens (CloudApp-Discovery.Read.All) and are never broken.
    return textwrap.wrap(
        text, WIDTH, initial_indent=first, subsequent_indent=" " * indent, break_on_hyphens=False,
        break_long_words=False,
    )


def render_diff(catalog: Catalog, diff: Diff) -> str:
    """Removed items first, then added ones, each grouped by shared purpose (catalog.diff_layout), every name."""
    layout = diff_layout(diff)
    lines = [
        layout.title,
        f"  from {revision_label(catalog, diff.from_version)}",
        f"  to   {revision_label(catalog, diff.to_version)}",
        "",
    ]
    if not layout.sides:
        return "\n".join([*lines, "No permission or role changed."])
    lines += [layout.summary, ""]
    for side in layout.sides:
        sign = "-" if side.change == "removed" else "+"
        lines.append(f"{side.title} ({len(side.items)})" + (f" · {side.where}" if side.where else "") + ":")
        for group in side.groups:
            lines += _diff_group(sign, group, where=side.where is None)
        lines.append("")
    return "\n".join(lines).rstrip()


_ORDER = {CheckStatus.failed: 0, CheckStatus.unknown: 1, CheckStatus.warn: 2, CheckStatus.passed: 3,
          CheckStatus.not_applicable: 4}
_MARK = {CheckStatus.failed: "✗", CheckStatus.unknown: "?", CheckStatus.warn: "!", CheckStatus.passed: "✓",
         CheckStatus.not_applicable: "-"}


def render_report(report: Report) -> str:
    """A check report, verdict first and failures first; a reason shared by every unchecked item is said once."""
    tenant = report.tenant
    name = " ".join(part for part in (tenant.name, tenant.domain) if part)
    verdict = VERDICT_TEXT[report.verdict]
    lines = [
        f"Tenant {tenant.id}" + (f" ({name})" if name else ""),
        f"{verdict.title.upper()}: {verdict.meaning}",
        f"Catalog {report.catalog_version}; fully satisfied revision: {report.satisfied_version or 'none'}."
        + (" (cached result; --fresh re-checks)" if report.cached else ""),
        "",
    ]
    common = report.common_failure
    if common:
        unchecked = sum(1 for item in report.items if item.status is CheckStatus.unknown)
        lines += _wrap(f"{_MARK[CheckStatus.unknown]} unknown",
                       f"{counted(unchecked, 'check')} could not run. {common}")
    for item in sorted(report.items, key=lambda item: _ORDER[item.status]):
        if item.status in (CheckStatus.passed, CheckStatus.not_applicable) or (common and item.status is
                                                                                CheckStatus.unknown):
            continue
        lines += _wrap(f"{_MARK[item.status]} {item.status.value}", f"{item.title}: {item.detail}")
        if item.why and item.status is not CheckStatus.unknown:
            lines += _wrap("  why", item.why)
        if item.remediation:
            # Unwrapped: fixes hold commands and URLs that must survive copy and paste.
            lines.append(f"{'  fix':<14}{item.remediation}")
    for name, end in sorted(report.role_ends.items(), key=lambda pair: pair[1]):
        lines += _wrap("! ends", f"{name}: held until {when_text(end)} through a time-bound assignment; Huntress "
                                 "loses it then unless it is made permanent (itdr fix).")
    passed = sum(1 for item in report.items if item.status is CheckStatus.passed)
    not_applicable = sum(1 for item in report.items if item.status is CheckStatus.not_applicable)
    lines.append("")
    lines.append(f"{passed} passed, {not_applicable} not applicable; {counted(report.round_trips, 'round trip')} "
                 f"in {counted(report.waves, 'wave')}, {report.duration_ms} ms.")
    return "\n".join(lines)


def render_plan(plan: Plan) -> str:
    """A fix plan: numbered steps in order, each with who, how, the portal path and Microsoft's wait."""
    lines = [f"Fix plan for {plan.tenant_label} ({plan.tenant_id}), catalog {plan.version}: "
             f"{VERDICT_TEXT[plan.verdict].title.lower()}, checked {plan.checked_at or 'just now'}"
             + (" (cached result; --fresh re-checks)" if plan.cached else "") + "."]
    if not plan.steps and not plan.unread:
        return plan.nothing_to_fix
    numbers = {step.id: index for index, step in enumerate(plan.steps, 1)}
    for index, step in enumerate(plan.steps, 1):
        lines += ["", f"{index}. {step.title}"]
        after = [str(numbers[a]) for a in step.after if a in numbers]
        lines += _wrap("  items", ", ".join(step.items))
        for impact in step.impact:
            lines += _wrap("  breaks", impact)
        lines += _wrap("  who", " or ".join(step.who) + (f" (after step {', '.join(after)})" if after else ""))
        for command in step.commands:
            lines.append(f"{'  run':<14}{command}")  # unwrapped: commands must survive copy and paste
        if step.portal:
            lines += _wrap("  portal", step.portal)
        wait = (f"{counted(step.wait_minutes, 'minute')}: {step.wait_note} ({step.wait_source})" if step.wait_minutes
                else step.wait_note + (f" ({step.wait_source})" if step.wait_source else ""))
        lines += _wrap("  wait", wait)
    if plan.unread:
        lines += ["", "Not covered (could not be read):"]
        for text in plan.unread:
            lines += _wrap("  unknown", text)
    return "\n".join(lines)
