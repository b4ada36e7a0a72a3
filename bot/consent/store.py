"""Consent requests and the audit trail in Redis. State that fails closed: every method raises StateUnavailable
when Redis cannot be reached, and nothing is decided without its record.

Every change is one WATCH/MULTI transaction that reads the request, applies a pure rule (`bot.consent.model`),
and writes the request and its audit records together, so 50 simultaneous clicks make exactly one transition.

Keys (under the Redis prefix), each bounded (README "Consent walk-through" lists them too):
    consent:req:{id}              the request (JSON), kept 30 days after it expires
    consent:open:{tenant}:{vN}    the id of the open request for a tenant and revision: until the request
                                  expires; while its card is being posted, RESERVE_SECONDS
    consent:card:{channel}:{ts}   the id of the request a card shows, as long as the request
    consent:approved:{tenant}     the last revision approved for the tenant, APPROVED_TTL after the approval
    consent:due                   open requests by expiry time (sorted set; a request leaves it when it closes)
    consent:refused:{tenant}:{user}  refusals of one clicker recorded in the last hour (REFUSALS_PER_HOUR)
    audit:{tenant}                the audit trail (stream), appended to, never rewritten; the newest
                                  AUDIT_MAX_ENTRIES kept (oldest dropped first)
    tenant:alias:{domain}         the tenant id behind a domain used in a request, kept as long as its request
    epoch                         when the state began (`State.epoch`), never expires
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from redis.asyncio.client import Pipeline

from bot import metrics
from bot.consent.model import AuditAction, AuditEntry, ConsentRequest, ConsentState, Outcome
from bot.store import Epoch, State
from catalog.words import counted

RETENTION = timedelta(days=30)  # an expired or closed request stays readable this long
APPROVED_TTL = timedelta(days=400)  # "last approved revision" outlives a year of quiet, not forever
RESERVE_SECONDS = 120  # a slot claimed while its card is posted; freed by itself if that process dies
AUDIT_MAX_ENTRIES = 10_000  # per tenant: years of activity; the oldest go first
REFUSALS_PER_HOUR = 10  # refused clicks recorded per clicker and tenant; more are logged, not appended


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class UnknownRequest(LookupError):
    """No such consent request (never existed, or past its retention)."""


@dataclass(frozen=True)
class AuditRecord:
    at: str
    tenant: str
    request_id: str
    action: str
    actor: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"at": self.at, "tenant": self.tenant, "request_id": self.request_id, "action": self.action,
                "actor": self.actor, "detail": self.detail}


class ConsentStore:
    def __init__(self, state: State) -> None:
        self.state = state

    # --- keys -------------------------------------------------------------------------------------

    def _request(self, request_id: str) -> str:
        return self.state.key("consent", "req", request_id)

    def _open(self, tenant: str, version: str) -> str:
        return self.state.key("consent", "open", tenant, version)

    def _card(self, channel: str, ts: str) -> str:
        return self.state.key("consent", "card", channel, ts)

    def _approved(self, tenant: str) -> str:
        return self.state.key("consent", "approved", tenant)

    def _due(self) -> str:
        return self.state.key("consent", "due")

    def _audit(self, tenant: str) -> str:
        return self.state.key("audit", tenant)

    def _alias(self, domain: str) -> str:
        return self.state.key("tenant", "alias", domain.lower())

    def _refused(self, tenant: str, actor: str) -> str:
        return self.state.key("consent", "refused", tenant, actor)

    async def epoch(self) -> Epoch:
        return await self.state.epoch()

    async def reset_since(self, known: str | None) -> Epoch | None:
        return await self.state.reset_since(known)

    @staticmethod
    def _keep_until(request: ConsentRequest) -> int:
        return int((request.expires_at + RETENTION).timestamp())

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, request_id: str) -> ConsentRequest:
        async with self.state.guard("read the consent request") as redis:
            raw = await redis.get(self._request(request_id))
        if raw is None:
            raise UnknownRequest(request_id)
        return ConsentRequest.model_validate_json(raw)

    async def by_card(self, channel: str, ts: str) -> ConsentRequest | None:
        """The request a Slack message shows (the click's container is Slack's word, not the button's)."""
        async with self.state.guard("read the consent request") as redis:
            request_id = await redis.get(self._card(channel, ts))
        if request_id is None:
            return None
        try:
            return await self.get(_text(request_id))
        except UnknownRequest:
            return None

    async def open_for(self, tenant: str, version: str) -> ConsentRequest | None:
        async with self.state.guard("read the open consent requests") as redis:
            request_id = await redis.get(self._open(tenant, version))
        if request_id is None:
            return None
        try:
            request = await self.get(_text(request_id))
        except UnknownRequest:
            return None
        return request if request.state.open else None

    async def last_approved(self, tenant: str) -> str | None:
        async with self.state.guard("read the tenant's approvals") as redis:
            raw = await redis.get(self._approved(tenant))
        return _text(raw) if raw else None

    async def resolve_alias(self, domain: str) -> str | None:
        async with self.state.guard("read the audit trail") as redis:
            raw = await redis.get(self._alias(domain))
        return _text(raw) if raw else None

    async def due(self, now: datetime, limit: int = 500) -> list[str]:
        """Ids of open requests whose time has come."""
        async with self.state.guard("read the consent requests") as redis:
            # Without scores, redis-py returns the members alone (its annotation covers every variant).
            ids = cast(list[bytes], await redis.zrangebyscore(self._due(), "-inf", now.timestamp(), start=0,
                                                              num=limit))
        return [_text(raw) for raw in ids]

    async def open_ids(self, limit: int = 1000) -> list[str]:
        async with self.state.guard("read the consent requests") as redis:
            ids = cast(list[bytes], await redis.zrange(self._due(), 0, limit - 1))
        return [_text(raw) for raw in ids]

    async def audit(self, tenant: str, *, newest: int | None = None) -> list[AuditRecord]:
        """The audit trail of a tenant, oldest first (the newest `newest` entries when given)."""
        async with self.state.guard("read the audit trail") as redis:
            if newest is None:
                entries = await redis.xrange(self._audit(tenant)) or []
            else:
                entries = list(reversed(await redis.xrevrange(self._audit(tenant), count=newest) or []))
        return [AuditRecord(**{_text(key): _text(value) for key, value in (fields or {}).items()})
                for _, fields in entries]

    # --- writes -------------------------------------------------------------------------------------

    async def reserve(self, request: ConsentRequest) -> ConsentRequest | None:
        """Claim the one open slot for the request's tenant and revision. Returns the request already holding it
        (its `message_ts` is None while its card is being posted), or None when this one now does.

        The claim is recorded with the request itself for RESERVE_SECONDS, so a second `/itdr consent` at the same
        moment sees it (and where it is being posted); `save_new` keeps both for the request's life."""
        key = self._open(request.tenant.id, request.version)

        async def body(pipe: Pipeline) -> ConsentRequest | None:
            holder = await pipe.get(key)
            if holder is not None:
                raw = await pipe.get(self._request(_text(holder)))
                existing = ConsentRequest.model_validate_json(raw) if raw else None
                if existing is not None and existing.state.open:
                    return existing
                # The slot is held by a request that has closed (or whose posting died): take it over.
            pipe.multi()
            pipe.set(key, request.id, ex=RESERVE_SECONDS)
            pipe.set(self._request(request.id), request.model_dump_json(), ex=RESERVE_SECONDS)
            await pipe.execute()
            return None

        return await self.state.atomically("record the consent request", [key], body)

    async def release(self, request: ConsentRequest) -> None:
        """Give the slot back (the card could not be posted)."""
        key = self._open(request.tenant.id, request.version)

        async def body(pipe: Pipeline) -> None:
            holder = await pipe.get(key)
            pipe.multi()
            if holder is not None and _text(holder) == request.id:
                pipe.delete(key, self._request(request.id))
            await pipe.execute()

        await self.state.atomically("record the consent request", [key], body)

    async def save_new(self, request: ConsentRequest) -> None:
        """Record a posted request, its card and the `requested` audit entry, together."""
        assert request.message_ts is not None
        keep = self._keep_until(request)
        async with self.state.guard("record the consent request") as redis, redis.pipeline(transaction=True) as pipe:
            pipe.set(self._request(request.id), request.model_dump_json(), exat=keep)
            pipe.set(self._open(request.tenant.id, request.version), request.id,
                     exat=int(request.expires_at.timestamp()))
            pipe.set(self._card(request.channel, request.message_ts), request.id, exat=keep)
            pipe.zadd(self._due(), {request.id: request.expires_at.timestamp()})
            if request.tenant.domain:
                pipe.set(self._alias(request.tenant.domain), request.tenant.id, exat=keep)
            detail = (f"{request.version}: {counted(len(request.ask.asked), 'item')} asked, "
                      f"{counted(request.required_approvals, 'approval')} needed")
            self._append(pipe, request, AuditEntry(AuditAction.requested, request.requester, detail))
            await pipe.execute()
        metrics.CONSENT_TRANSITIONS.labels(kind=AuditAction.requested.value).inc()

    async def record_refusal(self, request: ConsentRequest, actor: str, why: str) -> bool:
        """An attempt turned away before any rule could run (a forged button on a known card, an outsider's Deny).
        Rate-limited as every refusal is (see `_append_refusal`); False when this one was not recorded."""
        return await self._append_refusal(request, AuditEntry(AuditAction.refused, actor, why))

    async def _append_refusal(self, request: ConsentRequest, entry: AuditEntry) -> bool:
        """Append a refusal unless its actor already has REFUSALS_PER_HOUR of them on this tenant (until an hour
        passes without one): anyone in the channel can click, and nobody may flood the trail."""
        counter = self._refused(request.tenant.id, entry.actor)
        async with self.state.guard("record the refused attempt") as redis:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.incr(counter)
                pipe.expire(counter, 3600)  # an hour after the last refusal
                count, _ = await pipe.execute()
            if int(count) > REFUSALS_PER_HOUR:
                return False
            async with redis.pipeline(transaction=True) as pipe:
                self._append(pipe, request, entry)
                await pipe.execute()
        metrics.CONSENT_TRANSITIONS.labels(kind=entry.action.value).inc()
        return True

    async def apply(self, request_id: str, rule: Callable[[ConsentRequest], Outcome], what: str) -> Outcome:
        """Read the request, apply `rule`, and write the result and its audit records atomically (see
        `State.atomically`: every attempt sees the state it acts on). An attempt that changes nothing (a refusal)
        writes only its audit records, rate-limited per actor."""
        key = self._request(request_id)

        async def body(pipe: Pipeline) -> Outcome:
            raw = await pipe.get(key)
            if raw is None:
                raise UnknownRequest(request_id)
            outcome = rule(ConsentRequest.model_validate_json(raw))
            if not outcome.changed:
                return outcome
            pipe.multi()
            self._write(pipe, outcome.request)
            for entry in outcome.audit:
                self._append(pipe, outcome.request, entry)
            await pipe.execute()
            return outcome

        outcome = await self.state.atomically(what, [key], body)
        for entry in outcome.audit:  # counted once the transaction is made (it may have been run again)
            metrics.CONSENT_TRANSITIONS.labels(kind=entry.action.value).inc()
        if not outcome.changed:
            for entry in outcome.audit:
                await self._append_refusal(outcome.request, entry)
        return outcome

    def _write(self, pipe: Pipeline, request: ConsentRequest) -> None:
        pipe.set(self._request(request.id), request.model_dump_json(), exat=self._keep_until(request))
        if not request.state.open:
            # Its open slot is left alone: `reserve` replaces a holder that has closed.
            pipe.zrem(self._due(), request.id)
        if request.state is ConsentState.approved:
            pipe.set(self._approved(request.tenant.id), request.version, ex=APPROVED_TTL)

    def _append(self, pipe: Pipeline, request: ConsentRequest, entry: AuditEntry) -> None:
        pipe.xadd(self._audit(request.tenant.id), {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "tenant": request.tenant.id,
            "request_id": request.id,
            "action": entry.action.value,
            "actor": entry.actor,
            "detail": entry.detail,
        }, maxlen=AUDIT_MAX_ENTRIES, approximate=True)

    # --- attempts under way: a server killed mid-way leaves its "Preparing…" message a way forward ----------------

    async def begin_attempt(self, attempt: str, due: datetime, *, forget_before: datetime) -> list[str]:
        """Record an attempt under way until `due`; the attempts still recorded (forgetting those older than
        `forget_before`, whose response_url Slack no longer takes)."""
        key = self.state.key("consent", "preparing")
        async with self.state.guard("record the consent request") as redis, redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", forget_before.timestamp())
            pipe.zrange(key, 0, -1)
            pipe.zadd(key, {attempt: due.timestamp()})
            pipe.expire(key, 3600)
            results = await pipe.execute()
        return [_text(raw) for raw in results[1]]

    async def take_attempts(self, attempts: list[str]) -> list[str]:
        """Remove attempts, each for one caller only; those this caller removed."""
        if not attempts:
            return []
        key = self.state.key("consent", "preparing")
        async with self.state.guard("record the consent request") as redis, redis.pipeline(transaction=False) as pipe:
            for attempt in attempts:
                pipe.zrem(key, attempt)
            removed = await pipe.execute()
        return [attempt for attempt, gone in zip(attempts, removed, strict=True) if gone]

    async def overdue_attempts(self, now: datetime) -> list[str]:
        async with self.state.guard("read the consent requests") as redis:
            raws = cast(list[bytes], await redis.zrangebyscore(self.state.key("consent", "preparing"), "-inf",
                                                               now.timestamp(), start=0, num=100))
        return [_text(raw) for raw in raws]
