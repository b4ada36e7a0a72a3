"""Consent requests and the audit trail in Redis. State that fails closed: every method raises StateUnavailable
when Redis cannot be reached, and nothing is decided without its record.

Every change is one WATCH/MULTI transaction that reads the request, applies a pure rule (`bot.consent.model`),
and writes the request and its audit records together, so 50 simultaneous clicks make exactly one transition.

Keys (under the Redis prefix):
    consent:req:{id}              the request (JSON), kept 30 days after it expires
    consent:open:{tenant}:{vN}    the id of the open request for a tenant and revision
    consent:card:{channel}:{ts}   the id of the request a card shows (Slack tells which message was clicked)
    consent:approved:{tenant}     the last revision approved for the tenant
    consent:due                   open requests by expiry time (sorted set)
    audit:{tenant}                the audit trail (stream), appended to, never rewritten
    tenant:alias:{domain}         the tenant id behind a domain used in a request
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from redis.asyncio.client import Pipeline

from bot import metrics
from bot.consent.model import AuditAction, AuditEntry, ConsentRequest, ConsentState, Outcome
from bot.store import State

RETENTION = timedelta(days=30)  # an expired or closed request stays readable this long


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
        """Claim the one open slot for the request's tenant and revision. Returns the request already holding it,
        or None when this one now does (it is not saved until `save_new`)."""
        key = self._open(request.tenant.id, request.version)

        async def body(pipe: Pipeline) -> ConsentRequest | None:
            holder = await pipe.get(key)
            if holder is not None:
                raw = await pipe.get(self._request(_text(holder)))
                existing = ConsentRequest.model_validate_json(raw) if raw else None
                if existing is not None and existing.state.open:
                    return existing
                # The slot is held by a request that was never posted or has closed: take it over.
            pipe.multi()
            pipe.set(key, request.id, exat=int(request.expires_at.timestamp()))
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
                pipe.delete(key)
            await pipe.execute()

        await self.state.atomically("record the consent request", [key], body)

    async def save_new(self, request: ConsentRequest) -> None:
        """Record a posted request, its card and the `requested` audit entry, together."""
        assert request.message_ts is not None
        keep = self._keep_until(request)
        async with self.state.guard("record the consent request") as redis, redis.pipeline(transaction=True) as pipe:
            pipe.set(self._request(request.id), request.model_dump_json(), exat=keep)
            pipe.set(self._card(request.channel, request.message_ts), request.id, exat=keep)
            pipe.zadd(self._due(), {request.id: request.expires_at.timestamp()})
            if request.tenant.domain:
                pipe.set(self._alias(request.tenant.domain), request.tenant.id)
            detail = f"{request.version}: {len(request.ask.asked)} items asked, {request.required_approvals} " \
                     f"approval{'s' if request.required_approvals != 1 else ''} needed"
            self._append(pipe, request, AuditEntry(AuditAction.requested, request.requester, detail))
            await pipe.execute()
        metrics.CONSENT_TRANSITIONS.labels(kind=AuditAction.requested.value).inc()

    async def record_refusal(self, request: ConsentRequest, actor: str, why: str) -> None:
        """An attempt turned away before any rule could run (a forged button on a known card)."""
        async with self.state.guard("record the refused attempt") as redis, redis.pipeline(transaction=True) as pipe:
            self._append(pipe, request, AuditEntry(AuditAction.refused, actor, why))
            await pipe.execute()
        metrics.CONSENT_TRANSITIONS.labels(kind=AuditAction.refused.value).inc()

    async def apply(self, request_id: str, rule: Callable[[ConsentRequest], Outcome], what: str) -> Outcome:
        """Read the request, apply `rule`, and write the result and its audit records atomically (see
        `State.atomically`: every attempt sees the state it acts on)."""
        key = self._request(request_id)

        async def body(pipe: Pipeline) -> Outcome:
            raw = await pipe.get(key)
            if raw is None:
                raise UnknownRequest(request_id)
            outcome = rule(ConsentRequest.model_validate_json(raw))
            pipe.multi()
            if outcome.changed:
                self._write(pipe, outcome.request)
            for entry in outcome.audit:
                self._append(pipe, outcome.request, entry)
            await pipe.execute()
            return outcome

        outcome = await self.state.atomically(what, [key], body)
        for entry in outcome.audit:  # counted once the transaction is made (it may have been run again)
            metrics.CONSENT_TRANSITIONS.labels(kind=entry.action.value).inc()
        return outcome

    def _write(self, pipe: Pipeline, request: ConsentRequest) -> None:
        pipe.set(self._request(request.id), request.model_dump_json(), exat=self._keep_until(request))
        if not request.state.open:
            # Its open slot is left alone: `reserve` replaces a holder that has closed.
            pipe.zrem(self._due(), request.id)
        if request.state is ConsentState.approved:
            pipe.set(self._approved(request.tenant.id), request.version)

    def _append(self, pipe: Pipeline, request: ConsentRequest, entry: AuditEntry) -> None:
        pipe.xadd(self._audit(request.tenant.id), {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "tenant": request.tenant.id,
            "request_id": request.id,
            "action": entry.action.value,
            "actor": entry.actor,
            "detail": entry.detail,
        })
