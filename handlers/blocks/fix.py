"""Block Kit for a fix plan: ordered steps (who, commands, portal, Microsoft's wait), each marked done or still
missing after a re-check, with Re-check now, Re-check after the wait and Start consent. Pure: a plan (and a fresh
report) in, a message out; the worker renders the same message when a scheduled re-check comes back."""

from __future__ import annotations

import json
from datetime import datetime

from bot.readiness.fix import Action, Plan, Step, step_done
from bot.readiness.model import Report
from catalog.words import counted
from handlers.blocks.check import verdict_title
from handlers.blocks.consent import slack_date
from handlers.blocks.kit import MAX_SECTION_TEXT, Message, actions, button, context, escape, header, section, truncate
from handlers.ids import ActionId, BlockId

MAX_COMMANDS_SHOWN = 6


def plan_value(plan: Plan) -> str:
    """A plan button's value: the tenant and revision (the listener finds the plan by its message)."""
    return json.dumps({"t": plan.tenant_id, "v": plan.version}, separators=(",", ":"))


def _mark(step: Step, report: Report | None) -> str:
    if report is None:
        return ":white_small_square:"
    done = step_done(step, report)
    return ":information_source:" if done is None else ":white_check_mark:" if done else ":x:"


def _wait(step: Step) -> str:
    if step.wait_minutes:
        return f"{step.wait_minutes} min (<{step.wait_source}|Microsoft>)"
    return escape(step.wait_note) + (f" (<{step.wait_source}|Microsoft>)" if step.wait_source else "")


def _step_text(number: int, step: Step, report: Report | None, numbers: dict[str, int]) -> str:
    after = [str(numbers[a]) for a in step.after if a in numbers]
    lines = [f"{_mark(step, report)} *{number}. {escape(step.title)}*"
             + (f" _(after step {', '.join(after)})_" if after else ""),
             f"*Items:* {escape(truncate(', '.join(step.items), 600))}"]
    if step.impact:
        lines.append(f"*Breaks until done:* {escape(truncate('; '.join(step.impact), 500))}")
    lines.append(f"*Who:* {escape(' or '.join(step.who))} · *Wait:* {_wait(step)}")
    if step.portal:
        lines.append(f"*Portal:* {escape(step.portal)}")
    shown = step.commands[:MAX_COMMANDS_SHOWN]
    if shown:
        more = len(step.commands) - len(shown)
        code = "\n".join(escape(c) for c in shown) + (f"\n… {more} more (itdr fix --script)" if more else "")
        lines.append(f"```{code}```")
    return truncate("\n".join(lines), MAX_SECTION_TEXT)


def plan_message(plan: Plan, *, report: Report | None = None, rechecked_at: datetime | None = None,
                 scheduled_at: datetime | None = None, scheduled_by: str | None = None) -> Message:
    """The plan as posted in the channel; with `report`, each step marked from that fresh check."""
    blocks = [header(f"Fix plan: {plan.tenant_label} ({plan.version})")]
    verdict = report.verdict if report is not None else plan.verdict
    about = [f"{verdict_title(verdict)} · tenant `{escape(plan.tenant_id)}`",
             f"planned from the check of {escape(plan.checked_at or 'now')}" + (" (cached)" if plan.cached else "")]
    if rechecked_at is not None:
        about.append(f"re-checked {slack_date(rechecked_at)}")
    blocks.append(context(*about))
    numbers = {step.id: index for index, step in enumerate(plan.steps, 1)}
    for index, step in enumerate(plan.steps, 1):
        blocks.append(section(_step_text(index, step, report, numbers)))
    if plan.unread:
        blocks.append(section(truncate("*Not covered (could not be read):*\n" + "\n".join(
            f"• {escape(text)}" for text in plan.unread), MAX_SECTION_TEXT)))
    if scheduled_at is not None:
        who = f" by <@{escape(scheduled_by)}>" if scheduled_by else ""
        blocks.append(context(f":alarm_clock: Re-check after the wait scheduled for {slack_date(scheduled_at)}{who}"))
    value = plan_value(plan)
    buttons = [button("Re-check now", ActionId.FIX_RECHECK.value, value)]
    if plan.longest_wait:
        buttons.append(button(f"Re-check after the wait ({plan.longest_wait} min)", ActionId.FIX_RECHECK_LATER.value,
                              value))
    consent = next((s for s in plan.steps if s.action is Action.consent and s.id == "consent"), None)
    if consent is not None and (report is None or not step_done(consent, report)):
        buttons.append(button("Start consent", ActionId.FIX_CONSENT.value, value, style="primary"))
    blocks.append(actions(buttons, BlockId.FIX_ACTIONS.value))
    done = sum(1 for s in plan.steps if report is not None and step_done(s, report))
    text = (f"Fix plan for {plan.tenant_label} ({plan.version}): {counted(len(plan.steps), 'step')}"
            + (f", {done} done after the re-check" if report is not None else ""))
    return Message(text=text, blocks=blocks)


def recheck_summary(plan: Plan, report: Report) -> tuple[int, int, list[str]]:
    """(steps done, steps that can be checked, titles still missing) after a fresh check."""
    states = [(step, step_done(step, report)) for step in plan.steps]
    checkable = [(s, d) for s, d in states if d is not None]
    return (sum(1 for _, d in checkable if d), len(checkable), [s.title for s, d in checkable if not d])


def recheck_reply(plan: Plan, report: Report, asked_by: str, *, after_wait: bool) -> Message:
    done, total, missing = recheck_summary(plan, report)
    how = "after Microsoft's wait" if after_wait else "now"
    text = (f"Re-checked {escape(plan.tenant_label)} {how}, as <@{escape(asked_by)}> asked: {done} of "
            f"{counted(total, 'step')} done; verdict {verdict_title(report.verdict)}.")
    if missing:
        text += "\nStill missing: " + "; ".join(escape(t) for t in missing[:8])
    return Message(text=truncate(text, MAX_SECTION_TEXT), blocks=[section(truncate(text, MAX_SECTION_TEXT))])
