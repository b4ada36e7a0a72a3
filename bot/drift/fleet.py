"""The fleet at a glance: verdict counts, what is most often missing, and the first names of the blocked, the stale
and the never read. Computed by streaming over the watched tenants in batches (bounded memory: a batch of snapshots
and a page of names per list, whatever the fleet's size), stored by the worker in one Redis key, read in one call
by App Home and `/itdr fleet`. Pure: the store feeds it batches and keeps what it returns.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.readiness.model import Verdict
from bot.store import unpack

STALE_AFTER = timedelta(days=1)
TOP_MISSING = 10
#: Names kept per list in the stored summary: what a Slack view or `itdr fleet` (text) shows, the rest counted.
PAGE = 25
_MISSING = ("fail", "warn")


@dataclass(frozen=True)
class Names:
    """A list of tenant labels that may not be shown whole: how many there are, and the first few by name."""

    total: int = 0
    first: tuple[str, ...] = ()

    @property
    def left_out(self) -> int:
        return self.total - len(self.first)


class _FirstNames:
    """Counts names and keeps the first `limit` by name (all when `limit` is None), in bounded memory."""

    def __init__(self, limit: int | None) -> None:
        self.limit, self.total, self.names = limit, 0, list[str]()

    def add(self, name: str) -> None:
        self.total += 1
        self.names.append(name)
        if self.limit is not None and len(self.names) >= 4 * self.limit + 64:
            self.names = heapq.nsmallest(self.limit, self.names, key=_order)

    def done(self) -> Names:
        names = sorted(self.names, key=_order)
        return Names(self.total, tuple(names if self.limit is None else names[:self.limit]))


def _order(name: str) -> tuple[str, str]:
    return name.casefold(), name


@dataclass(frozen=True)
class Fleet:
    tenants: int
    verdicts: dict[str, int]
    top_missing: list[tuple[str, int]]
    blocked: Names
    stale: Names  # read, but not for more than a day
    unread: Names  # watched, never read yet (e.g. imported, no sweep since)
    computed_at: datetime
    ending: Names = Names()  # a role held through a time-bound assignment ends within two weeks
    generation: int = 0  # the fleet's change counter when it was computed
    current: bool = True  # False: tenants were watched, unwatched or read since (the worker is updating it)

    def to_json(self) -> dict[str, object]:
        return {"tenants": self.tenants, "verdicts": self.verdicts,
                "top_missing": [{"name": name, "tenants": count} for name, count in self.top_missing],
                "blocked": list(self.blocked.first), "stale": list(self.stale.first),
                "not_read_yet": list(self.unread.first), "roles_ending": list(self.ending.first),
                "computed_at": self.computed_at.isoformat()}

    def dump(self) -> str:
        """The stored form (with each list's total)."""
        def names(n: Names) -> dict[str, Any]:
            return {"total": n.total, "first": list(n.first)}

        return json.dumps({"tenants": self.tenants, "verdicts": self.verdicts, "top_missing": self.top_missing,
                           "blocked": names(self.blocked), "stale": names(self.stale), "unread": names(self.unread),
                           "ending": names(self.ending), "computed_at": self.computed_at.isoformat(),
                           "generation": self.generation},
                          separators=(",", ":"))

    @classmethod
    def load(cls, raw: bytes | str, *, generation: int) -> Fleet:
        data = json.loads(raw)

        def names(d: dict[str, Any]) -> Names:
            return Names(int(d["total"]), tuple(d["first"]))

        return cls(tenants=int(data["tenants"]), verdicts=dict(data["verdicts"]),
                   top_missing=[(str(n), int(c)) for n, c in data["top_missing"]], blocked=names(data["blocked"]),
                   stale=names(data["stale"]), unread=names(data["unread"]),
                   ending=names(data.get("ending") or {"total": 0, "first": []}),  # stored before it was kept
                   computed_at=datetime.fromisoformat(data["computed_at"]), generation=int(data["generation"]),
                   current=int(data["generation"]) == generation)


@dataclass
class _Tally:
    now: datetime
    limit: int | None
    tenants: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: {verdict.value: 0 for verdict in Verdict})
    missing: Counter[str] = field(default_factory=Counter)
    blocked: _FirstNames = field(init=False)
    stale: _FirstNames = field(init=False)
    unread: _FirstNames = field(init=False)
    ending: _FirstNames = field(init=False)

    def __post_init__(self) -> None:
        self.blocked, self.stale, self.unread, self.ending = (_FirstNames(self.limit) for _ in range(4))

    def add(self, tenant: dict[str, Any], snapshot: dict[str, Any] | None) -> None:
        self.tenants += 1
        if snapshot is None:
            self.unread.add(str(tenant.get("name") or tenant.get("domain") or tenant.get("id") or "?"))
            return
        label = str(snapshot.get("name") or tenant.get("name") or snapshot.get("domain") or tenant.get("domain")
                    or snapshot.get("tenant") or tenant.get("id") or "?")
        verdict = str(snapshot.get("verdict"))
        self.verdicts[verdict] = self.verdicts.get(verdict, 0) + 1
        titles = snapshot.get("titles") or {}
        self.missing.update(titles.get(check, check) for check, status in (snapshot.get("statuses") or {}).items()
                            if status in _MISSING)
        if verdict == Verdict.blocked.value:
            self.blocked.add(label)
        if self.now - datetime.fromisoformat(str(snapshot["at"])) > STALE_AFTER:
            self.stale.add(label)
        # Ends announced (within ENDING_NOTICE of them) and not past: roles the tenant is about to lose.
        if any(datetime.fromisoformat(str(end)) > self.now for end in (snapshot.get("ends_told") or {}).values()):
            self.ending.add(label)


async def tally(batches: AsyncIterable[Sequence[tuple[bytes, bytes | None]]], *, now: datetime,
                limit: int | None = PAGE, generation: int = 0) -> Fleet:
    """The fleet from batches of (watched tenant JSON, packed snapshot or None); lists cut at `limit` names (each
    still counted whole), or complete when None."""
    counts = _Tally(now, limit)
    async for batch in batches:
        for tenant, snapshot in batch:
            counts.add(json.loads(tenant), json.loads(unpack(snapshot)) if snapshot else None)
    return Fleet(tenants=counts.tenants, verdicts=counts.verdicts, top_missing=counts.missing.most_common(TOP_MISSING),
                 blocked=counts.blocked.done(), stale=counts.stale.done(), unread=counts.unread.done(),
                 ending=counts.ending.done(), computed_at=now, generation=generation)
