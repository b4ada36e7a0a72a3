"""A consent request and the rules of its life, as pure code: who may do what, in which state, and what the audit
trail records for it. The store applies these rules atomically; nothing here does I/O.

    pending ──approve (enough distinct approvers)──▶ approved ──verified (fresh check satisfies)──▶ verified
       │ deny (with a reason)                          │ expiry
       ▼                                               ▼
     denied                                         expired   (pending expires too)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ConsentState(StrEnum):
    pending = "pending"  # waiting for approvals
    approved = "approved"  # approvals complete, the admin-consent link is out, waiting for proof
    verified = "verified"  # a fresh readiness check shows the revision granted
    denied = "denied"
    expired = "expired"

    @property
    def open(self) -> bool:
        return self in (ConsentState.pending, ConsentState.approved)


class AuditAction(StrEnum):
    requested = "requested"
    approved = "approved"
    refused = "refused"  # a click or callback turned away
    denied = "denied"
    expired = "expired"
    link_issued = "link_issued"
    callback_granted = "callback_granted"  # older records; the callback is now recorded as admin_returned
    admin_returned = "admin_returned"  # the admin came back through the link without an error: a claim, unverified
    callback_failed = "callback_failed"
    verified = "verified"


class Approval(BaseModel):
    model_config = ConfigDict(frozen=True)

    user: str
    at: datetime


class TenantRef(BaseModel):
    """The tenant as the request shows it; `id` is the GUID the admin-consent redirect must return."""

    model_config = ConfigDict(frozen=True)

    id: str
    domain: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.domain or self.id


class Ask(BaseModel):
    """What the request asks for, from the catalog and the tenant's readiness report at the time."""

    model_config = ConfigDict(frozen=True)

    since: str | None  # the revision the tenant had: last approved here, else the newest it fully grants
    asked: tuple[str, ...]  # catalog names the tenant lacks for the target revision
    granted: tuple[str, ...]  # catalog names it already has


class ConsentRequest(BaseModel):
    id: str
    epoch: str = ""  # the state's epoch when the request was made (signed into its buttons and link)
    tenant: TenantRef
    version: str
    requester: str
    channel: str
    message_ts: str | None = None  # the card, once posted
    required_approvals: int
    approvals: tuple[Approval, ...] = ()
    state: ConsentState = ConsentState.pending
    created_at: datetime
    expires_at: datetime
    ask: Ask
    decided_by: str | None = None
    decided_at: datetime | None = None
    deny_reason: str | None = None
    link_nonce: str | None = None  # the `state` of the admin-consent link now out; retired only by `verified`
    last_error: str | None = None  # Microsoft's description of a failed consent
    returned_at: datetime | None = None  # an admin came back through the link without an error (unverified)
    still_missing: tuple[str, ...] = ()  # what the last verification did not find yet
    verdict: str | None = None  # the verdict of the last verification

    def expired_at(self, now: datetime) -> bool:
        return self.state.open and now >= self.expires_at

    @property
    def approvers(self) -> list[str]:
        return [approval.user for approval in self.approvals]


@dataclass(frozen=True)
class AuditEntry:
    action: AuditAction
    actor: str
    detail: str = ""


@dataclass(frozen=True)
class Outcome:
    """What one attempt did: the request after it (changed or not), the audit records to append, and, for an
    attempt turned away, why (a sentence for the person who tried)."""

    request: ConsentRequest
    audit: tuple[AuditEntry, ...] = ()
    refusal: str | None = None
    changed: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def accepted(self) -> bool:
        return self.refusal is None


def new_request_id() -> str:
    return secrets.token_urlsafe(12)


def new_nonce() -> str:
    return secrets.token_urlsafe(9)


def now_utc() -> datetime:
    return datetime.now(UTC)


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "earlier"


def _refuse(request: ConsentRequest, actor: str, why: str, *, detail: str | None = None) -> Outcome:
    return Outcome(request, (AuditEntry(AuditAction.refused, actor, detail or why),), refusal=why)


def _expire(request: ConsentRequest, actor: str, now: datetime) -> Outcome:
    expired = request.model_copy(update={"state": ConsentState.expired, "decided_at": now, "link_nonce": None})
    return Outcome(expired, (AuditEntry(AuditAction.expired, actor, f"open since {_when(request.created_at)}"),),
                   changed=True)


def closed_reason(request: ConsentRequest) -> str:
    by = f" by <@{request.decided_by}>" if request.decided_by else ""
    return f"This request was already {request.state.value}{by} at {_when(request.decided_at)}."


def approve(request: ConsentRequest, actor: str, *, approvers: frozenset[str], now: datetime) -> Outcome:
    """An approval click. Enough distinct approvers (never the requester) make the request approved, which issues
    the admin-consent link in the same step."""
    if request.expired_at(now):
        outcome = _expire(request, actor, now)
        return Outcome(outcome.request, (*outcome.audit, AuditEntry(AuditAction.refused, actor, "expired")),
                       refusal="This request has expired; ask again with `/itdr consent`.", changed=True)
    if request.state is not ConsentState.pending:
        return _refuse(request, actor, closed_reason(request), detail=f"already {request.state.value}")
    if actor not in approvers:
        return _refuse(request, actor, "Only the configured approvers (ITDR_APPROVERS) can approve or deny consent "
                                       "requests.", detail="not an approver")
    if actor == request.requester:
        return _refuse(request, actor, "This is your own request: another approver has to decide it.",
                       detail="own request")
    if actor in request.approvers:
        return _refuse(request, actor, "You have already approved this request; it needs another approver.",
                       detail="already approved by this approver")
    approvals = (*request.approvals, Approval(user=actor, at=now))
    entries = [AuditEntry(AuditAction.approved, actor, f"{len(approvals)} of {request.required_approvals}")]
    update: dict[str, object] = {"approvals": approvals}
    if len(approvals) >= request.required_approvals:
        nonce = new_nonce()
        update |= {"state": ConsentState.approved, "decided_by": actor, "decided_at": now, "link_nonce": nonce}
        entries.append(AuditEntry(AuditAction.link_issued, actor, f"admin-consent link for {request.version}"))
    return Outcome(request.model_copy(update=update), tuple(entries), changed=True)


def deny(request: ConsentRequest, actor: str, reason: str, *, approvers: frozenset[str], now: datetime) -> Outcome:
    reason = " ".join(reason.split())
    if request.expired_at(now):
        outcome = _expire(request, actor, now)
        return Outcome(outcome.request, (*outcome.audit, AuditEntry(AuditAction.refused, actor, "expired")),
                       refusal="This request has expired; there is nothing left to deny.", changed=True)
    if request.state is not ConsentState.pending:
        return _refuse(request, actor, closed_reason(request), detail=f"already {request.state.value}")
    if actor not in approvers:
        return _refuse(request, actor, "Only the configured approvers (ITDR_APPROVERS) can approve or deny consent "
                                       "requests.", detail="not an approver")
    if not reason:
        return _refuse(request, actor, "A denial needs a reason.", detail="empty deny reason")
    denied = request.model_copy(update={"state": ConsentState.denied, "decided_by": actor, "decided_at": now,
                                        "deny_reason": reason[:500]})
    return Outcome(denied, (AuditEntry(AuditAction.denied, actor, reason[:500]),), changed=True)


def expire(request: ConsentRequest, *, now: datetime) -> Outcome:
    """A sweep's (or any reader's) look at a request past its time."""
    if not request.expired_at(now):
        return Outcome(request)
    return _expire(request, "itdr", now)


def callback(
    request: ConsentRequest, *, nonce: str, tenant: str | None, error: str | None, description: str | None,
    now: datetime,
) -> Outcome:
    """Microsoft's redirect after the admin's decision: a claim, not a proof (anyone holding the link can call it).

    `error` is read first: Microsoft's declined redirect carries `error`, `error_description` and `state`, and no
    `tenant`. Nothing here retires the link the admin may still come back by (a forged or replayed call must not
    lock the real admin out): a declined consent shows the same link again for the next try, and a return without
    an error is recorded as unverified; only `verified` (a fresh readiness check) closes the link."""
    actor = "admin-consent callback"
    if request.expired_at(now):
        outcome = _expire(request, actor, now)
        return Outcome(outcome.request, (*outcome.audit, AuditEntry(AuditAction.refused, actor, "expired")),
                       refusal="This consent request has expired.", changed=True)
    if request.state is not ConsentState.approved or not request.link_nonce:
        return _refuse(request, actor, "This consent request is not waiting for an admin's consent.",
                       detail=f"callback while {request.state.value}")
    if nonce != request.link_nonce:
        return _refuse(request, actor, "This link was replaced by a newer one.", detail="unknown or stale state")
    if error:
        text = (f"{error}: {description}" if description else error)[:500]
        if text == request.last_error:  # the same redirect again (a reload): already recorded
            return Outcome(request)
        failed = request.model_copy(update={"last_error": text})
        return Outcome(failed, (AuditEntry(AuditAction.callback_failed, actor, text),), changed=True)
    if (tenant or "").lower() != request.tenant.id.lower():
        return _refuse(request, actor, "Microsoft returned another tenant than the one this request is for.",
                       detail=f"callback for tenant {tenant or '(none)'}")
    returned = request.model_copy(update={"last_error": None, "returned_at": now})
    return Outcome(returned, (AuditEntry(AuditAction.admin_returned, actor,
                                         f"admin returned (unverified) for tenant {request.tenant.id}"),),
                   changed=True)


def verified(
    request: ConsentRequest, actor: str, *, satisfied: bool, verdict: str, missing: tuple[str, ...], now: datetime
) -> Outcome:
    """The outcome of a fresh readiness check after consent."""
    if request.expired_at(now):
        return _expire(request, actor, now)
    if request.state is not ConsentState.approved:
        return _refuse(request, actor, closed_reason(request) if request.state is not ConsentState.pending else
                       "This request is not approved yet.", detail=f"verify while {request.state.value}")
    if satisfied:
        done = request.model_copy(update={"state": ConsentState.verified, "verdict": verdict, "still_missing": (),
                                          "link_nonce": None, "decided_at": now})
        return Outcome(done, (AuditEntry(AuditAction.verified, actor, f"verdict {verdict}"),), changed=True)
    entries = [AuditEntry(AuditAction.verified, actor, f"verdict {verdict}; {len(missing)} still missing")]
    nonce = request.link_nonce
    if nonce is None:  # the last link was used: the admin needs a new one to grant what is still missing
        nonce = new_nonce()
        entries.append(AuditEntry(AuditAction.link_issued, actor, "a new link for what is still missing"))
    waiting = request.model_copy(update={"verdict": verdict, "still_missing": missing, "link_nonce": nonce})
    return Outcome(waiting, tuple(entries), changed=True)


def expiry(created_at: datetime, ttl_seconds: int) -> datetime:
    return created_at + timedelta(seconds=ttl_seconds)
