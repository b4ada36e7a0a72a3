"""Block Kit for drift: one tenant's change, a digest of many, a new catalog revision, the fleet and a channel's
watch list. Pure: engine objects in, messages out (a worker posts them without importing any listener)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.drift.audit import Revocations
from bot.drift.fleet import Fleet, Names
from bot.drift.model import Change, ChangeKind, ItemChange, RoleEnding
from bot.drift.service import Watching
from bot.drift.store import WatchedTenant
from bot.readiness.model import VERDICT_TEXT, Verdict
from catalog import Catalog, Diff
from catalog.words import counted
from handlers.blocks.answers import diff_message
from handlers.blocks.check import VERDICT_EMOJI, verdict_title
from handlers.blocks.consent import slack_date
from handlers.blocks.kit import Block, Message, actions, button, chunk_lines, context, escape, header, section
from handlers.ids import ActionId, BlockId, SubCommand
from handlers.payloads import AnswerRequest

MAX_ITEMS_LISTED = 40


def tenant_value(tenant: str) -> str:
    """A drift button's value: the tenant it is about (the listener checks the channel watches it)."""
    return json.dumps({"t": tenant}, separators=(",", ":"))


def _verdict(verdict: Verdict | None) -> str:
    return f"{VERDICT_EMOJI[verdict]} {VERDICT_TEXT[verdict].title}" if verdict else "none yet"


def _item_line(change: ItemChange, catalog: Catalog) -> str:
    name = change.catalog_name or change.title
    line = f"• `{escape(name)}` {change.before.value} → *{change.after.value}*"
    if change.drift:
        item = catalog.get(change.catalog_name) if change.catalog_name else None
        if item is not None:
            line += f" — stops: *{escape(item.impact.capability_title)}*: {escape(item.impact.capability_summary)}"
        line += f" (last good {slack_date(change.last_good)})" if change.last_good else " (never seen good)"
    return line


def _ending_line(ending: RoleEnding, catalog: Catalog) -> str:
    line = f"• `{escape(ending.catalog_name)}` until {slack_date(ending.end)}"
    item = catalog.get(ending.catalog_name)
    if item is not None:
        line += f" — then stops: *{escape(item.impact.capability_title)}*: {escape(item.impact.capability_summary)}"
    return line


def _who_lines(change: Change, who: Revocations | None) -> list[str]:
    if who is None:
        return []
    if who.error:
        return [f":grey_question: The directory audit could not be read ({escape(who.error)}), so who did it is "
                "unknown."]
    if not who.events and who.beyond_retention and who.since is not None:
        return [":grey_question: The directory audit shows no removal, but the last check was "
                f"{slack_date(who.since)}: longer ago than Entra keeps its audit (7 days without Entra ID P1/P2, "
                "30 with), so who did it "
                "may no longer be recorded."]
    if not who.events:
        return ["The directory audit shows no removal since the last check (it can lag by up to an hour)."]
    lines = ["*Directory audit:*"]
    for event in who.events[:5]:
        named = [i.catalog_name for i in change.drifted if i.catalog_name and event.mentions(i.catalog_name)]
        what = ", ".join(f"`{escape(n)}`" for n in named) if named else escape(event.detail)
        lines.append(f"• {escape(event.activity)} ({what}) by *{escape(event.actor)}* {slack_date(event.at)}")
    return lines


def drift_message(change: Change, catalog: Catalog, who: Revocations | None = None) -> Message:
    """One tenant's change, as a watching channel sees it, with its buttons."""
    if change.kind is ChangeKind.unknown:
        title = f":grey_question: Could not check {change.label} twice in a row"
        body = [f"Microsoft could not be read for this tenant in the last two checks: {escape(change.reason or '')}",
                f"Last known verdict: {_verdict(change.verdict_before)}. This is not drift; nothing is known to have "
                "changed."]
    else:
        drifted, recovered = change.drifted, change.recovered
        title = (f":rotating_light: Drift: {change.label}" if drifted and not recovered else
                 f":white_check_mark: Recovered: {change.label}" if recovered and not drifted else
                 f":hourglass_flowing_sand: Roles ending: {change.label}" if not change.items else
                 f":arrows_counterclockwise: Changed: {change.label}")
        body = [f"Verdict: {_verdict(change.verdict_before)} → *{_verdict(change.verdict_after)}*"]
        if drifted:
            body.append(f"*Lost ({len(drifted)}):*")
            body += [_item_line(item, catalog) for item in drifted[:MAX_ITEMS_LISTED]]
        if recovered:
            body.append(f"*Back ({len(recovered)}):*")
            body += [_item_line(item, catalog) for item in recovered[:MAX_ITEMS_LISTED]]
        if change.ending:
            body.append(f"*Ending ({len(change.ending)}):* held through time-bound assignments, lost when they end")
            body += [_ending_line(ending, catalog) for ending in change.ending[:MAX_ITEMS_LISTED]]
            body.append("Make them permanent before then: the fix plan has the commands "
                        f"(`/itdr fix {escape(change.tenant)}`).")
        body += _who_lines(change, who)
        if change.reason:
            body.append(f":grey_question: Part of the tenant could not be read in the last two checks: "
                        f"{escape(change.reason)}. What is listed above was read; the rest is as last known.")
    value = tenant_value(change.tenant)
    blocks: list[Block] = [header(title, BlockId.HEADER)]
    blocks += [section(chunk) for chunk in chunk_lines(body)][:40]
    blocks.append(context(f"Tenant `{escape(change.tenant)}` · checked {slack_date(change.at)}"))
    blocks.append(actions([
        button("Re-check", ActionId.DRIFT_RECHECK, value, style="primary"),
        button("Start consent", ActionId.DRIFT_CONSENT, value),
        button("Acknowledge", ActionId.DRIFT_ACK, value),
        button("Snooze 24 h", ActionId.DRIFT_SNOOZE, value),
    ], BlockId.DRIFT_ACTIONS))
    names = ", ".join([*(i.catalog_name or i.title for i in change.items), *(e.catalog_name for e in change.ending)])
    text = f"{escape(title.split(' ', 1)[1])}. Verdict {change.verdict_before} → {change.verdict_after}." + \
        (f" {escape(names)}" if names else "")
    return Message(text=text[:3000], blocks=blocks)


def closed_drift_message(original: dict[str, Any], note: str) -> Message:
    """A drift message after Acknowledge or Snooze: its content stays, the buttons give way to who did what."""
    blocks = [b for b in original.get("blocks") or [] if isinstance(b, dict) and b.get("type") != "actions"]
    blocks.append(section(note, block_id=BlockId.DRIFT_CLOSED))
    return Message(text=str(original.get("text") or note), blocks=blocks[:50])


def digest_message(changes: Sequence[Change], catalog: Catalog) -> Message:
    """Many tenants changed in one sweep for one channel: one message, grouped by what is missing."""
    lost: dict[str, list[str]] = defaultdict(list)
    back: dict[str, list[str]] = defaultdict(list)
    ending: dict[str, list[str]] = defaultdict(list)
    unknown: list[str] = []
    for change in changes:
        if change.reason:
            unknown.append(change.label)
        for item in change.items:
            (lost if item.drift else back)[item.catalog_name or item.title].append(change.label)
        for soon in change.ending:
            ending[soon.catalog_name].append(f"{change.label} ({soon.end:%Y-%m-%d})")
    lines: list[str] = []
    for name, tenants in sorted(lost.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        entry = catalog.get(name)
        stops = f" — stops: {escape(entry.impact.capability_title)}" if entry else ""
        lines.append(f"• *Lost* `{escape(name)}` in {len(tenants)}: {escape(', '.join(sorted(tenants)))}{stops}")
    for name, tenants in sorted(back.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"• *Back* `{escape(name)}` in {len(tenants)}: {escape(', '.join(sorted(tenants)))}")
    for name, tenants in sorted(ending.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"• *Ending* `{escape(name)}` (time-bound) in {len(tenants)}: "
                     f"{escape(', '.join(sorted(tenants)))}")
    if unknown:
        lines.append(f"• *Could not be checked twice in a row* ({len(unknown)}): {escape(', '.join(sorted(unknown)))}")
    blocks: list[Block] = [header(f":rotating_light: Drift in {counted(len(changes), 'tenant')}", BlockId.HEADER)]
    blocks += [section(chunk) for chunk in chunk_lines(lines)][:45]
    blocks.append(context("One digest instead of one message per tenant · `/itdr watching` lists them all · "
                          "`/itdr check TENANT` for details"))
    text = f"Drift in {counted(len(changes), 'tenant')}: " + escape(", ".join(sorted(c.label for c in changes)))
    return Message(text=text[:3000], blocks=blocks)


def revision_message(diff: Diff, catalog: Catalog, *, lacking: int, watched: int) -> Message:
    """A new catalog revision, announced once to every watching channel."""
    answer = diff_message(diff, AnswerRequest(cmd=SubCommand.DIFF, args=(diff.from_version, diff.to_version)),
                          notes=catalog.revision(diff.to_version).notes, shared_by=None)
    blocks = [b for b in answer.blocks if b.get("type") != "actions"]
    blocks.insert(0, section(f":mega: *A new revision of the ITDR permission document: {diff.to_version}.* "
                             f"{lacking} of {counted(watched, 'watched tenant')} {'lacks' if lacking == 1 else 'lack'} "
                             "what it adds; a sweep is checking them "
                             "now.", block_id=BlockId.REVISION))
    return Message(text=f"New ITDR revision {diff.to_version}: {lacking} of {counted(watched, 'watched tenant')} "
                        f"{'lacks' if lacking == 1 else 'lack'} what it adds. {answer.text}"[:3000], blocks=blocks[:50])


def _names_line(title: str, names: Names) -> str:
    """A list of tenants that may be too long to show: its count, the first page, and how to see the rest."""
    line = f"*{title} ({names.total}):* " + escape(", ".join(names.first))
    if names.left_out:
        line += f" and {names.left_out} more (`itdr fleet --json` lists them all)"
    return line


def fleet_message(fleet: Fleet) -> Message:
    verdicts = " · ".join(f"{_verdict(Verdict(v))} {n}" for v, n in fleet.verdicts.items())
    lines = [f"*{counted(fleet.tenants, 'watched tenant')}* · {verdicts}"]
    if fleet.top_missing:
        lines.append("*Most often missing:* " + ", ".join(f"`{escape(name)}` ({count})"
                                                          for name, count in fleet.top_missing))
    if fleet.blocked.total:
        lines.append(_names_line("Blocked", fleet.blocked))
    if fleet.stale.total:
        lines.append(_names_line("Not read for more than a day", fleet.stale))
    if fleet.unread.total:
        lines.append(_names_line("Not read yet", fleet.unread))
    if fleet.ending.total:
        lines.append(_names_line("Roles ending within two weeks", fleet.ending))
    blocks: list[Block] = [header("ITDR fleet", BlockId.HEADER)]
    blocks += [section(chunk) for chunk in chunk_lines(lines)][:45]
    if not fleet.current:
        blocks.append(context(f"As of {slack_date(fleet.computed_at)}: tenants changed since, and the worker is "
                              "bringing this summary up to date."))
    return Message(text=f"{counted(fleet.tenants, 'watched tenant')}; blocked: {fleet.blocked.total}.", blocks=blocks)


def watching_message(channel: str, rows: Sequence[Watching], now: datetime, total: int | None = None) -> Message:
    """The tenants a channel watches (its first page when `total` says there are more): name, domain and id, last
    verdict and when it was read; broken, snoozed or acknowledged here."""
    total = len(rows) if total is None else total
    if not rows:
        text = "This channel watches no tenant. `/itdr watch TENANT` adds one."
        return Message(text=text, blocks=[section(text, block_id=BlockId.BODY)])
    lines = []
    for row in rows:
        tenant, snapshot, broken = row.tenant, row.snapshot, row.broken
        state = (f"{_verdict(snapshot.verdict)} · read {slack_date(snapshot.at)}" if snapshot else "not read yet")
        if row.snoozed_until is not None and row.snoozed_until > now:
            state += f" · snoozed here until {slack_date(row.snoozed_until)}"
        if (ack := row.acknowledged) is not None:
            state += f" · {counted(len(ack.items), 'missing item')} acknowledged here by <@{escape(ack.by)}>"
        ending = sorted(end for end in (snapshot.ends_told.values() if snapshot else ()) if end > now)
        if ending:
            state += f" · :hourglass_flowing_sand: a role ends {slack_date(ending[0])}"
        if broken:
            state += f" · :warning: *broken:* {escape(broken)}"
        name = tenant.name or (snapshot.name if snapshot else None)
        domain = tenant.domain or (snapshot.domain if snapshot else None)
        parts = ([f"*{escape(name)}*"] if name else []) + ([escape(domain)] if domain and domain != tenant.id else [])
        who = " · ".join([*parts, f"`{escape(tenant.id)}`"])
        lines.append(f"• {who} — {state}")
    if total > len(rows):
        lines.append(f"…and {total - len(rows)} more (`itdr tenants --json` lists them all).")
    blocks: list[Block] = [header(f"Watched here: {counted(total, 'tenant')}", BlockId.HEADER)]
    blocks += [section(chunk) for chunk in chunk_lines(lines)][:45]
    return Message(text=f"This channel watches {counted(total, 'tenant')}.", blocks=blocks)


def watch_confirmation(tenant: WatchedTenant, verdict: Verdict, by: str) -> Message:
    text = (f":eyes: <@{by}> asked me to watch *{escape(tenant.label)}* here: I will post when a permission or role "
            f"it needs is lost, comes back or is about to end. Current verdict: {_verdict(verdict)}.")
    return Message(text=f"Watching {escape(tenant.label)} here (verdict {verdict.value}).",
                   blocks=[section(text, block_id=BlockId.BODY)])


def watch_answer(tenant: WatchedTenant, verdict: Verdict, *, channel: str | None, new: bool) -> Message:
    """The private answer to `/itdr watch`; another channel (a validated `C…` id) as a mention Slack links."""
    status = "now watches" if new else "already watched"
    rest = f"{status} {tenant.label}: its verdict is {verdict.value}."
    where = "This channel" if channel is None else f"<#{channel}>"
    return Message(text=f"{where} {escape(rest)}", blocks=[section(f"{where} {escape(rest)}", block_id=BlockId.BODY)])


__all__ = ["closed_drift_message", "digest_message", "drift_message", "fleet_message", "revision_message",
           "tenant_value", "verdict_title", "watch_answer", "watch_confirmation",
           "watching_message"]
