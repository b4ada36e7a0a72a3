"""The consent walk-through: who may decide, what is asked, the admin-consent link, and the proof afterwards.

Engine only: it reads and writes state (`ConsentStore`), asks the readiness service, and returns what happened;
the Slack surface (listeners, the callback page, the worker) renders cards from it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.consent import model
from bot.consent.model import Ask, ConsentRequest, ConsentState, Outcome, TenantRef
from bot.consent.signing import BadSignature, Signer
from bot.consent.store import AuditRecord, ConsentStore, UnknownRequest
from bot.microsoft.tenant import admin_consent_url, parse_tenant
from bot.readiness.model import CheckStatus, Report, Verdict
from bot.readiness.service import CheckRequest, ReadinessService, TenantUnresolved
from bot.settings import Settings
from bot.store import Cache, Epoch
from catalog import Catalog

#: An attempt not finished this long past the check's deadline was lost with its server.
ATTEMPT_GRACE_SECONDS = 60
#: Slack takes answers on a response_url for 30 minutes (https://api.slack.com/interactivity/handling#message_responses).
RESPONSE_URL_SECONDS = 1800


@dataclass(frozen=True)
class Attempt:
    """A consent request being prepared: who asked, and where their "Preparing…" message can be answered."""

    tenant: str
    version: str
    user: str
    response_url: str
    started: str

    def to_member(self) -> str:
        return json.dumps([self.tenant, self.version, self.user, self.response_url, self.started])

    @classmethod
    def from_member(cls, member: str) -> Attempt:
        tenant, version, user, response_url, started = json.loads(member)
        return cls(tenant, version, user, response_url, started)


log = logging.getLogger(__name__)

MembersOf = Callable[[str], Awaitable[list[str]]]
GROUP_TTL_SECONDS = 300
_BUTTON, _STATE = "consent-button", "consent-state"


class ConsentRefused(Exception):
    """The request cannot be made; str(exc) tells the requester why, and nothing was recorded."""


class StateReset(UnknownRequest):
    """The request is gone because Redis lost its data after the value naming it was signed; str(exc) says when."""

    def __init__(self, epoch: Epoch) -> None:
        super().__init__(epoch.reset_sentence())
        self.epoch = epoch


@dataclass(frozen=True)
class Prepared:
    """What `/itdr consent` found: a new request to post, an open one to point at, or nothing to ask."""

    request: ConsentRequest | None = None
    existing: ConsentRequest | None = None
    satisfied: Report | None = None


@dataclass(frozen=True)
class Verification:
    outcome: Outcome
    report: Report


def is_satisfied(catalog: Catalog, report: Report, version: str) -> bool:
    """The tenant grants every item the revision asks for (the newest fully granted revision is at least it)."""
    have = report.satisfied_version
    return have is not None and catalog.revision(have).number >= catalog.revision(version).number


class ConsentService:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: ConsentStore,
        readiness: ReadinessService | None,
        cache: Cache,
        members_of: MembersOf,
        signer: Signer,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.readiness = readiness
        self.cache = cache
        self.members_of = members_of
        self.signer = signer

    # --- who decides ------------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        return bool(self.settings.approvers)

    async def approvers(self) -> frozenset[str]:
        """Users named in ITDR_APPROVERS plus the members of the user groups named there (cached 5 minutes)."""
        users = {entry for entry in self.settings.approvers if not entry.startswith("S")}
        for group in (entry for entry in self.settings.approvers if entry.startswith("S")):
            members = await self.cache.get_json(f"usergroup:{group}")
            if not isinstance(members, list):
                members = await self.members_of(group)
                await self.cache.set_json(f"usergroup:{group}", members, GROUP_TTL_SECONDS)
            users.update(str(member) for member in members)
        return frozenset(users)

    # --- signed values ------------------------------------------------------------------------------

    def button_value(self, request: ConsentRequest) -> str:
        """The request's id and the state's epoch it was made in, signed (the epoch tells a reset from a forgery)."""
        return self.signer.sign(_BUTTON, request.id, *((request.epoch,) if request.epoch else ()))

    def request_id(self, value: str | None) -> str:
        """The request a button value names; BadSignature for a forged or edited value."""
        return self.signer.verify(_BUTTON, value, (1, 2))[0]

    async def gone(self, value: str | None) -> str:
        """Why the request a (verified) button value names no longer exists, in a sentence for the clicker."""
        parts = self.signer.verify(_BUTTON, value, (1, 2))
        reset = await self.store.reset_since(parts[1] if len(parts) > 1 else None)
        if reset is not None:
            return reset.reset_sentence()
        return "That consent request no longer exists; ask again with `/itdr consent`."

    def consent_url(self, request: ConsentRequest) -> str | None:
        """The admin-consent link for an approved request (None when no link is out)."""
        if request.state is not ConsentState.approved or not request.link_nonce:
            return None
        state = self.signer.sign(_STATE, request.id, request.link_nonce, *((request.epoch,) if request.epoch else ()))
        return admin_consent_url(self.settings.authority_host, self.settings.target_app_id, request.tenant.id,
                                 state=state, redirect_uri=self.settings.itdr_consent_redirect_uri)

    # --- reading ------------------------------------------------------------------------------------

    async def get(self, request_id: str) -> ConsentRequest:
        """The request; UnknownRequest when there is none."""
        return await self.store.get(request_id)

    async def awaiting_proof(self) -> list[ConsentRequest]:
        """Approved requests whose admin-consent link is out: the worker checks them until verified."""
        requests = []
        for request_id in await self.store.open_ids():
            try:
                request = await self.store.get(request_id)
            except UnknownRequest:
                continue
            if request.state is ConsentState.approved:
                requests.append(request)
        return requests

    # --- asking ---------------------------------------------------------------------------------

    async def prepare(self, check: CheckRequest, requester: str, channel: str) -> Prepared:
        """Check (or reuse the check of) the tenant and work out what to ask. Raises ConsentRefused."""
        if not self.configured:
            raise ConsentRefused(
                "Consent requests need approvers: an operator sets ITDR_APPROVERS to the Slack user ids (U…) or "
                "user-group ids (S…) allowed to approve, and ITDR_REQUIRED_APPROVALS (default 1).")
        if self.readiness is None:
            raise ConsentRefused("Consent requests need the readiness check, which is not configured here: an "
                                 "operator sets ITDR_CLIENT_ID, ITDR_CLIENT_SECRET and ITDR_TARGET_APP_ID.")
        tenant_id = await self._tenant_id(check)
        existing = await self.store.open_for(tenant_id, check.version)
        if existing is not None:
            return Prepared(existing=await self._expire_if_due(existing))
        report = await self.readiness.run(check)
        if report.verdict is not Verdict.unknown and is_satisfied(self.catalog, report, check.version):
            return Prepared(satisfied=report)
        now = model.now_utc()
        request = ConsentRequest(
            id=model.new_request_id(),
            epoch=(await self.store.epoch()).value,
            tenant=TenantRef(id=tenant_id, domain=report.tenant.domain or (None if check.tenant.is_guid
                                                                            else check.tenant.value),
                             name=report.tenant.name),
            version=check.version,
            requester=requester,
            channel=channel,
            required_approvals=self.settings.itdr_required_approvals,
            created_at=now,
            expires_at=model.expiry(now, self.settings.itdr_consent_ttl_seconds),
            ask=await self._ask(tenant_id, report, check.version),
        )
        return Prepared(request=request)

    async def _tenant_id(self, check: CheckRequest) -> str:
        """The tenant's GUID: the admin-consent callback returns it, and the request must know which to expect."""
        assert self.readiness is not None
        try:
            return await self.readiness.tenant_guid(check.tenant)
        except TenantUnresolved as exc:
            raise ConsentRefused(f"Cannot prepare a consent request: {exc}") from None

    async def _ask(self, tenant_id: str, report: Report, version: str) -> Ask:
        wanted = {item.name for item in self.catalog.items_at(version)
                  if self.settings.itdr_cpv_mode or not item.cpv_only}
        status = {item.catalog_name: item.status for item in report.items if item.catalog_name}
        granted = tuple(name for name in sorted(wanted) if status.get(name) is CheckStatus.passed)
        asked = tuple(item.name for item in self.catalog.items_at(version)
                      if item.name in wanted and item.name not in granted)
        since = await self.store.last_approved(tenant_id) or report.satisfied_version
        return Ask(since=since, asked=asked, granted=granted)

    async def reserve(self, request: ConsentRequest) -> ConsentRequest | None:
        """The open request already holding this tenant and revision, or None once this one holds it."""
        existing = await self.store.reserve(request)
        return await self._expire_if_due(existing) if existing is not None else None

    async def publish(self, request: ConsentRequest, message_ts: str) -> ConsentRequest:
        posted = request.model_copy(update={"message_ts": message_ts})
        await self.store.save_new(posted)
        return posted

    async def release(self, request: ConsentRequest) -> None:
        await self.store.release(request)

    # --- attempts under way ---------------------------------------------------------------------------

    async def begin_attempt(self, check: CheckRequest, user: str, response_url: str) -> tuple[Attempt, list[Attempt]]:
        """Record that `user` is preparing a request (its "Preparing…" message at `response_url`); the same user's
        earlier attempts for the same tenant and revision that never finished (their server was killed), now taken
        over. Other people's attempts under way are theirs: asked at once, they get "already open", not "took over"."""
        now = model.now_utc()
        attempt = Attempt(tenant=check.tenant.value, version=check.version, user=user, response_url=response_url,
                          started=now.isoformat())
        due = now + timedelta(seconds=self.settings.itdr_check_deadline_seconds + ATTEMPT_GRACE_SECONDS)
        recorded = await self.store.begin_attempt(attempt.to_member(), due,
                                                  forget_before=now - timedelta(seconds=RESPONSE_URL_SECONDS))
        earlier = [a for a in map(Attempt.from_member, recorded)
                   if (a.tenant, a.version, a.user) == (attempt.tenant, attempt.version, attempt.user)]
        taken = set(await self.store.take_attempts([a.to_member() for a in earlier]))
        return attempt, [a for a in earlier if a.to_member() in taken]

    async def end_attempt(self, attempt: Attempt) -> None:
        await self.store.take_attempts([attempt.to_member()])

    async def unfinished_attempts(self) -> list[Attempt]:
        """Attempts past their time (their server stopped mid-way), each returned to one caller only."""
        overdue = await self.store.overdue_attempts(model.now_utc())
        return [Attempt.from_member(member) for member in await self.store.take_attempts(overdue)]

    # --- deciding ----------------------------------------------------------------------------------

    async def approve(self, request_id: str, actor: str) -> Outcome:
        approvers = await self.approvers()
        now = model.now_utc()
        return await self.store.apply(request_id, lambda r: model.approve(r, actor, approvers=approvers, now=now),
                                      "record the approval")

    async def deny(self, request_id: str, actor: str, reason: str) -> Outcome:
        approvers = await self.approvers()
        now = model.now_utc()
        return await self.store.apply(
            request_id, lambda r: model.deny(r, actor, reason, approvers=approvers, now=now), "record the denial")

    async def may_deny(self, request_id: str, actor: str) -> Outcome | None:
        """Before the reason dialog opens: None when `actor` may deny the request now, else the refusal, recorded
        (an expired request is expired on the way)."""
        request = await self.store.get(request_id)
        now = model.now_utc()
        if request.expired_at(now) or request.state is not ConsentState.pending:
            return await self.deny(request_id, actor, "")
        if actor not in await self.approvers():
            outcome = model.deny(request, actor, "", approvers=frozenset(), now=now)
            await self.store.record_refusal(request, actor, "not an approver")
            return outcome
        return None

    async def refuse_forged(self, channel: str, ts: str, actor: str) -> None:
        """A button value we did not sign, clicked on a card we know: the attempt goes into that tenant's audit
        (rate-limited per clicker, so nobody can flood the trail)."""
        request = await self.store.by_card(channel, ts)
        if request is not None:
            await self.store.record_refusal(request, actor, "forged or edited button value")
        log.warning("consent button with a bad signature from %s", actor)

    async def verify(self, request_id: str, actor: str) -> Verification:
        """A fresh readiness check; the request becomes verified when the tenant grants the revision."""
        assert self.readiness is not None
        request = await self.store.get(request_id)
        self.readiness.tokens.forget(request.tenant.id)  # right after consent, a cached refusal must not stand
        report = await self.readiness.run(CheckRequest(parse_tenant(request.tenant.id), request.version), fresh=True)
        satisfied = is_satisfied(self.catalog, report, request.version)
        missing = tuple(name for names in report.missing.values() for name in names)
        now = model.now_utc()
        outcome = await self.store.apply(request_id, lambda r: model.verified(
            r, actor, satisfied=satisfied, verdict=report.verdict.value, missing=missing, now=now),
            "record the verification")
        return Verification(outcome, report)

    async def callback(
        self, state: str | None, tenant: str | None, error: str | None, description: str | None
    ) -> Outcome:
        """Microsoft's redirect after the admin's decision. Raises BadSignature for a state we did not issue and
        UnknownRequest for a request that does not exist."""
        request_id, nonce, *epoch = self.signer.verify(_STATE, state, (2, 3))
        now = model.now_utc()
        try:
            return await self.store.apply(request_id, lambda r: model.callback(
                r, nonce=nonce, tenant=tenant, error=error, description=description, now=now), "record the callback")
        except UnknownRequest:
            reset = await self.store.reset_since(epoch[0] if epoch else None)
            if reset is not None:
                raise StateReset(reset) from None
            raise

    # --- time and reading --------------------------------------------------------------------------

    async def _expire_if_due(self, request: ConsentRequest) -> ConsentRequest:
        if not request.expired_at(model.now_utc()):
            return request
        return (await self.expire(request.id)).request

    async def expire(self, request_id: str) -> Outcome:
        now = model.now_utc()
        return await self.store.apply(request_id, lambda r: model.expire(r, now=now), "record the expiry")

    async def expire_due(self, now: datetime | None = None) -> list[Outcome]:
        """Expire every open request past its time (each exactly once, however many callers run this)."""
        outcomes = []
        for request_id in await self.store.due(now or model.now_utc()):
            try:
                outcome = await self.expire(request_id)
            except UnknownRequest:
                continue
            if outcome.changed:
                outcomes.append(outcome)
        return outcomes

    async def audit(self, tenant: str, *, newest: int | None = None) -> list[AuditRecord]:
        """A tenant's audit trail by id or by a domain used in one of its requests."""
        ref = parse_tenant(tenant)
        tenant_id = ref.value if ref.is_guid else await self.store.resolve_alias(ref.value) or ref.value
        return await self.store.audit(tenant_id, newest=newest)


__all__ = ["BadSignature", "ConsentRefused", "ConsentService", "Prepared", "StateReset", "UnknownRequest",
           "Verification"]
