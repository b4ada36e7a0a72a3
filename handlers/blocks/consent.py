"""Block Kit for consent: the request card (one per state), the Review and Deny dialogs, the audit trail.

Pure: a `ConsentRequest` and the catalog in, blocks out. The card is rebuilt whole for each state, with block ids
that name the state, so Slack never keeps buttons from an earlier one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.consent.model import ConsentRequest, ConsentState
from bot.consent.store import AuditRecord
from catalog import API_LABELS, PRIVILEGE_LABELS, Catalog, Item, Privilege, group_by_purpose
from catalog.words import counted
from handlers.blocks.kit import (
    MAX_VIEW_BLOCKS,
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
from handlers.ids import ActionId, BlockId, ViewId

STATE_TITLES = {
    ConsentState.pending: ":lock: Consent request",
    ConsentState.approved: ":key: Consent approved, waiting for the admin",
    ConsentState.verified: ":white_check_mark: Consent verified",
    ConsentState.denied: ":no_entry: Consent denied",
    ConsentState.expired: ":hourglass: Consent request expired",
}
MAX_PRIVILEGED_NAMES = 40


def slack_date(at: datetime) -> str:
    """A time every reader sees in their own time zone (Slack's date formatting), with a UTC fallback."""
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _items(catalog: Catalog, names: Sequence[str]) -> list[Item]:
    return [item for name in names if (item := catalog.get(name)) is not None]


def _tenant_lines(request: ConsentRequest, catalog: Catalog) -> list[str]:
    tenant = request.tenant
    label = " · ".join(escape(part) for part in (tenant.name, tenant.domain) if part)
    revision = catalog.revision(request.version)
    done = len(request.approvals)
    approvals = f"{done} of {request.required_approvals}"
    if request.approvals:
        approvals += " (" + ", ".join(f"<@{a.user}>" for a in request.approvals) + ")"
    return [
        f"*Tenant:* {label + ' · ' if label else ''}`{escape(tenant.id)}`",
        f"*Revision:* {revision.version} ({revision.date.isoformat()}, {escape(revision.title)})",
        f"*Requested by* <@{request.requester}> · *approvals:* {approvals} · the requester cannot approve",
    ]


def _ask_lines(request: ConsentRequest, catalog: Catalog) -> list[str]:
    asked = _items(catalog, request.ask.asked)
    since = request.ask.since
    lines = [f"*What is asked: {len(asked)} item{'s' if len(asked) != 1 else ''}* "
             f"({len(request.ask.granted)} already granted)"]
    if since is not None:
        since_number = catalog.revision(since).number
        new = Counter(item.introduced_in for item in asked if catalog.revision(item.introduced_in).number
                      > since_number)
        older = sum(1 for item in asked if catalog.revision(item.introduced_in).number <= since_number)
        parts = [f"{version}: {count}" for version, count in sorted(new.items())]
        lines.append(f"Moving {since} → {request.version}: new in " + (", ".join(parts) or "none")
                     + (f"; {older} from {since} or earlier are missing too" if older else ""))
    per_api = Counter(item.api for item in asked)
    if per_api:
        lines.append("Per API: " + " · ".join(f"{API_LABELS[api].items} {count}" for api, count in per_api.items()))
    per_privilege = Counter(item.impact.privilege for item in asked)
    if per_privilege:
        lines.append("Per privilege: " + " · ".join(
            f"{PRIVILEGE_LABELS[privilege]} {per_privilege[privilege]}" for privilege in Privilege
            if per_privilege[privilege]))
    privileged = [item.name for item in asked if item.impact.privilege is Privilege.privileged]
    if privileged:
        shown = ", ".join(f"`{escape(name)}`" for name in privileged[:MAX_PRIVILEGED_NAMES])
        more = len(privileged) - MAX_PRIVILEGED_NAMES
        lines.append(f"*Privileged:* {shown}" + (f" and {more} more (see Review)" if more > 0 else ""))
    return lines


def _after_consent(request: ConsentRequest, catalog: Catalog) -> str | None:
    adds = [item for item in catalog.items_at(request.version) if item.huntress_adds]
    if not adds:
        return None
    names = " and ".join(f"*{escape(item.name)}*" for item in adds)
    return (f"*After consent:* Huntress adds its service principal to {names} during onboarding. Tenants with "
            "Privileged Identity Management (PIM) or role-assignment alerts will see alerts for it.")


def _state_lines(request: ConsentRequest) -> list[str]:
    when = slack_date(request.decided_at) if request.decided_at else "earlier"
    match request.state:
        case ConsentState.pending:
            return [f"Waiting for approval · expires {slack_date(request.expires_at)}"]
        case ConsentState.approved:
            lines = [f":white_check_mark: Approved by <@{request.decided_by}> {when}. *Step 2:* a Global "
                     "Administrator of the tenant grants admin consent with the button below; the bot then checks "
                     f"the tenant and records the result. Expires {slack_date(request.expires_at)}."]
            if request.last_error:
                lines.append(f":x: *Consent not granted:* {escape(truncate(request.last_error, 500))}. The admin "
                             "can try again with the button below.")
            elif request.returned_at:
                lines.append(f":leftwards_arrow_with_hook: An admin returned through the link "
                             f"{slack_date(request.returned_at)} (unverified: only a fresh check proves the grants).")
            if request.still_missing:
                names = ", ".join(f"`{escape(n)}`" for n in request.still_missing[:30])
                more = len(request.still_missing) - 30
                lines.append(f":warning: Last check ({request.verdict}): *{len(request.still_missing)} still "
                             f"missing*: {names}" + (f" and {more} more" if more > 0 else "")
                             + ". Microsoft can take a few minutes to show new grants: *Verify now* checks again.")
            return lines
        case ConsentState.verified:
            return [f":white_check_mark: *Verified* {when}: a fresh readiness check shows {request.version} granted "
                    f"(verdict: {request.verdict})."]
        case ConsentState.denied:
            return [f":no_entry: Denied by <@{request.decided_by}> {when}: _{escape(request.deny_reason or '')}_"]
        case ConsentState.expired:
            return [f":hourglass: Expired {when}: nothing was approved through this request. Ask again with "
                    f"`/itdr consent {escape(request.tenant.domain or request.tenant.id)}`."]


def card(request: ConsentRequest, catalog: Catalog, *, value: str, consent_url: str | None) -> Message:
    """The consent request card as the channel sees it in the request's current state."""
    state = request.state.value
    blocks: list[Block] = [
        header(f"{STATE_TITLES[request.state].split(' ', 1)[1]}: {request.tenant.label}",
               f"{BlockId.CONSENT_HEADER}-{state}"),
        section("\n".join(_tenant_lines(request, catalog)), block_id=f"{BlockId.CONSENT_TENANT}-{state}"),
    ]
    blocks += [section(chunk) for chunk in chunk_lines(_ask_lines(request, catalog))]
    if after := _after_consent(request, catalog):
        blocks.append(section(after))
    blocks.append(section("\n".join(_state_lines(request)), block_id=f"{BlockId.CONSENT_STATE}-{state}"))
    elements: list[Block] = []
    if request.state is ConsentState.pending:
        elements = [
            button("Review", ActionId.CONSENT_REVIEW, value),
            button("Approve", ActionId.CONSENT_APPROVE, value, style="primary"),
            button("Deny", ActionId.CONSENT_DENY, value, style="danger"),
        ]
    elif request.state is ConsentState.approved:
        if consent_url:
            grant = button("Grant admin consent", ActionId.CONSENT_GRANT, value, style="primary")
            grant["url"] = consent_url
            elements.append(grant)
        elements += [button("Verify now", ActionId.CONSENT_VERIFY, value), button("Review", ActionId.CONSENT_REVIEW,
                                                                                   value)]
    if elements:
        blocks.append(actions(elements, f"{BlockId.CONSENT_ACTIONS}-{state}"))
    blocks.append(context(f"Request `{request.id}` · `/itdr audit {escape(request.tenant.id)}` shows its trail"))
    title = STATE_TITLES[request.state].split(" ", 1)[1]
    text = (f"{title}: {escape(request.tenant.label)}, {request.version}, "
            f"{counted(len(request.ask.asked), 'item')} asked, "
            f"requested by <@{request.requester}>.")
    return Message(text=text, blocks=blocks)


def review_view(request: ConsentRequest, catalog: Catalog) -> dict[str, Any]:
    """Every item of the request, grouped per API, then purpose, with its privilege (a modal, ≤ 100 blocks)."""
    asked = set(request.ask.asked)
    items = [item for item in catalog.items_at(request.version) if item.name in asked or item.name in
             set(request.ask.granted)]
    blocks: list[Block] = [section(f"*{escape(request.tenant.label)}* · {request.version} · "
                                   f"{len(asked)} asked, {len(request.ask.granted)} already granted")]
    for api in API_LABELS:
        members = [item for item in items if item.api is api]
        if not members:
            continue
        lines = [f"*{API_LABELS[api].items} ({len(members)})*"]
        for group in group_by_purpose(members):
            lines.append(f"_{escape(truncate(group.label, 300))}_")
            for item in group.items:
                mark = "asked" if item.name in asked else "granted"
                lines.append(f"• `{escape(item.name)}` · {item.impact.privilege_label} · {mark}")
        blocks += [section(chunk) for chunk in chunk_lines(lines)]
    if len(blocks) > MAX_VIEW_BLOCKS:
        blocks = [*blocks[: MAX_VIEW_BLOCKS - 1], context("The list continues in `itdr why`; it is too long for "
                                                          "one dialog.")]
    return {"type": "modal", "callback_id": ViewId.CONSENT_REVIEW, "title": {"type": "plain_text",
            "text": "Review consent"}, "close": {"type": "plain_text", "text": "Close"}, "blocks": blocks}


def deny_view(request: ConsentRequest, metadata: str) -> dict[str, Any]:
    """The dialog that asks an approver why they deny (a reason is required)."""
    return {
        "type": "modal",
        "callback_id": ViewId.CONSENT_DENY,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Deny consent"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(f"Deny the consent request for *{escape(request.tenant.label)}* ({request.version})? The "
                    "channel will see who denied it and why."),
            {
                "type": "input",
                "block_id": BlockId.CONSENT_DENY_REASON,
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True,
                            "max_length": 500},
            },
        ],
    }


def audit_message(tenant: str, records: Sequence[AuditRecord]) -> Message:
    """The latest audit entries of a tenant, newest last."""
    if not records:
        text = f"No consent activity is recorded for {escape(tenant)}."
        return Message(text=text, blocks=[section(text, block_id=BlockId.BODY)])
    lines = []
    for record in records:
        actor = f"<@{record.actor}>" if record.actor[:1] in "UW" and record.actor.isalnum() else escape(record.actor)
        detail = f" — {escape(truncate(record.detail, 200))}" if record.detail else ""
        at = record.at[:16].replace("T", " ")
        lines.append(f"`{at}` *{record.action}* · {actor}{detail} · `{record.request_id}`")
    blocks: list[Block] = [header(f"Audit trail: {truncate(tenant, 120)}", BlockId.HEADER)]
    blocks += [section(chunk) for chunk in chunk_lines(lines)][:45]
    blocks.append(context(f"The latest {counted(len(records), 'entry', 'entries')}, oldest first · "
                          f"`itdr audit {escape(tenant)} --json` prints all of them"))
    return Message(text=f"Audit trail of {escape(tenant)}: {counted(len(records), 'entry', 'entries')}.", blocks=blocks)
