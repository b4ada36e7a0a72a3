"""The outbox: announcements promised to channels, kept in Redis until Slack has accepted them.

A change becomes one pending announcement per watching channel in the same transaction that records it (see
`DriftStore.update_snapshot`); a new catalog revision, one per channel in the transaction that records it as
announced. A worker delivering a channel holds a lease on it (renewed before each post, so a killed or cancelled
worker's lease lapses within `lease_seconds` and another takes over), posts, and removes what Slack accepted in
the same step that counts it. Delivery is therefore at least once: a message is posted twice only when a worker
dies between Slack accepting it and that removal (one Redis round trip).

Keys (under the Redis prefix):
    outbox:{channel}          hash: entry id → the pending announcement (JSON); expires a week after its last write
    outbox:channels           sorted set: channels with pending announcements, by when the first was recorded
    outbox:lease:{channel}    the delivering worker's token (expires unless renewed)
    snooze:{channel}:{tenant} the channel snoozed the tenant (expires when the snooze ends)
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio.client import Pipeline

from bot.drift.audit import Revocations
from bot.drift.model import Change

OUTBOX_TTL_SECONDS = 7 * 24 * 3600  # an announcement no worker could deliver in a week is dropped with its key
MAX_AGE = timedelta(seconds=OUTBOX_TTL_SECONDS)

#: Removes delivered (or dropped) entries, counts each tenant notified in its sweep, forgets a channel with
#: nothing left and, for a delivery, clears the channel's broken mark: one atomic step.
#: KEYS: outbox hash, outbox:channels, watch:broken; ARGV: channel, prefix, delivered (1/0), then triples of
#: (entry id, sweep or "", tenant or "").
DONE_SCRIPT = """
local delivered = ARGV[3] == '1'
for i = 4, #ARGV, 3 do
    local id, sweep, tenant = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if redis.call('HDEL', KEYS[1], id) == 1 and sweep ~= '' then
        local progress = ARGV[2] .. 'sweep:' .. sweep
        if redis.call('EXISTS', progress) == 1 then
            redis.call('HINCRBY', progress, 'pending', -1)
            if delivered and tenant ~= '' then
                redis.call('SADD', progress .. ':notified', tenant)
                redis.call('EXPIRE', progress .. ':notified', redis.call('TTL', progress))
            end
        end
    end
    if delivered and tenant ~= '' then redis.call('HDEL', KEYS[3], ARGV[1] .. ' ' .. tenant) end
end
if delivered then redis.call('HDEL', KEYS[3], ARGV[1] .. ' *') end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""

#: The lease is renewed, or let go, only by the worker holding it.
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Pending:
    """One announcement promised to one channel."""

    id: str
    channel: str
    recorded: datetime
    sweep: str | None = None  # announced when its sweep has finished (so many changes make one digest)
    watched: str | None = None  # the id the channel watches the tenant by (a domain, until the check settles it)
    change: Change | None = None
    who: Revocations | None = None
    text: str | None = None  # a prepared message (a catalog revision)
    blocks: list[dict[str, Any]] | None = None

    @property
    def tenant(self) -> str | None:
        return self.change.tenant if self.change is not None else None

    def to_json(self) -> str:
        return json.dumps({
            "id": self.id, "recorded": self.recorded.isoformat(), "sweep": self.sweep, "watched": self.watched,
            "change": self.change.model_dump(mode="json") if self.change is not None else None,
            "who": self.who.to_json() if self.who is not None else None, "text": self.text, "blocks": self.blocks,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, channel: str, raw: bytes | str) -> Pending:
        data = json.loads(raw)
        return cls(id=data["id"], channel=channel, recorded=datetime.fromisoformat(data["recorded"]),
                   sweep=data.get("sweep"), watched=data.get("watched"),
                   change=Change.model_validate(data["change"]) if data.get("change") else None,
                   who=Revocations.from_json(data["who"]) if data.get("who") else None,
                   text=data.get("text"), blocks=data.get("blocks"))


def change_entry_id(change: Change) -> str:
    """One change of one tenant: the same id however often the transaction recording it is retried."""
    return f"change:{change.tenant}:{change.at.isoformat()}:{change.kind.value}"


class Outbox:
    """Key names and the writes that go inside other transactions; the store runs them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def hash(self, channel: str) -> str:
        return f"{self.prefix}outbox:{channel}"

    @property
    def channels(self) -> str:
        return f"{self.prefix}outbox:channels"

    def lease(self, channel: str) -> str:
        return f"{self.prefix}outbox:lease:{channel}"

    def snooze(self, channel: str, tenant: str) -> str:
        return f"{self.prefix}snooze:{channel}:{tenant}"

    def add(self, pipe: Pipeline, entry: Pending) -> None:
        """Queue the entry's writes on a transaction (after `pipe.multi()`)."""
        pipe.hset(self.hash(entry.channel), entry.id, entry.to_json())
        pipe.expire(self.hash(entry.channel), OUTBOX_TTL_SECONDS)
        pipe.zadd(self.channels, {entry.channel: entry.recorded.timestamp()}, nx=True)
        if entry.sweep is not None:  # the caller knows the sweep's hash exists (it would otherwise be recreated)
            pipe.hincrby(f"{self.prefix}sweep:{entry.sweep}", "pending", 1)


def new_token() -> str:
    return secrets.token_hex(8)
