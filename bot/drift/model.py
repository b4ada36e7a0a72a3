"""Drift as pure code: what a tenant's last snapshot and a new readiness report say changed, and whether anyone
should hear about it. No I/O: the store applies this atomically, the worker and the listeners render it.

Rules:
- the first snapshot of a tenant is a baseline: nothing to announce;
- an item going pass → fail/warn is drift, fail/warn → pass is recovery; fail ↔ warn is not a change;
- a check that could not read the tenant (`unknown`) changes nothing; it is announced once it lasts two checks;
- an item that could not be read keeps its last known status;
- an acknowledged drift is not announced again until the item recovers; a snoozed tenant is quiet until then.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from bot.readiness.model import CheckStatus, Report, Verdict

UNKNOWN_STREAK_TO_ANNOUNCE = 2
_MISSING = (CheckStatus.failed, CheckStatus.warn)


class ChangeKind(StrEnum):
    baseline = "baseline"  # first snapshot: recorded, not announced
    none = "none"
    changed = "changed"  # drift and/or recovery
    unknown = "unknown"  # Microsoft could not be read for two checks in a row


class Acknowledgement(BaseModel):
    model_config = ConfigDict(frozen=True)

    by: str
    reason: str
    at: datetime
    items: tuple[str, ...]  # check ids acknowledged as missing


class Snapshot(BaseModel):
    """What the bot last knew of a tenant: every check's status, and since when each was last good."""

    tenant: str
    name: str | None = None
    domain: str | None = None
    version: str
    verdict: Verdict
    at: datetime
    statuses: dict[str, CheckStatus]
    titles: dict[str, str] = {}
    last_good: dict[str, datetime] = {}
    unknown_streak: int = 0
    acknowledged: Acknowledgement | None = None
    snoozed_until: datetime | None = None

    @property
    def label(self) -> str:
        return self.name or self.domain or self.tenant

    @property
    def missing(self) -> list[str]:
        return [check for check, status in self.statuses.items() if status in _MISSING]

    def snoozed(self, now: datetime) -> bool:
        return self.snoozed_until is not None and now < self.snoozed_until


class ItemChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    check: str  # check id, e.g. "graph.Mail.ReadWrite"
    title: str
    catalog_name: str | None
    before: CheckStatus
    after: CheckStatus
    last_good: datetime | None

    @property
    def drift(self) -> bool:
        return self.after in _MISSING


class Change(BaseModel):
    """The outcome of comparing a report with the last snapshot."""

    kind: ChangeKind
    tenant: str
    label: str
    verdict_before: Verdict | None
    verdict_after: Verdict
    items: tuple[ItemChange, ...] = ()
    since: datetime | None = None  # when the previous snapshot was taken (the window for the directory audit)
    at: datetime
    reason: str | None = None  # for `unknown`: why Microsoft could not be read

    @property
    def drifted(self) -> tuple[ItemChange, ...]:
        return tuple(item for item in self.items if item.drift)

    @property
    def recovered(self) -> tuple[ItemChange, ...]:
        return tuple(item for item in self.items if not item.drift)

    @property
    def announce(self) -> bool:
        return self.kind in (ChangeKind.changed, ChangeKind.unknown)


def observe(previous: Snapshot | None, report: Report, *, now: datetime) -> tuple[Snapshot, Change]:
    """The new snapshot and what changed, from the last snapshot and a new report."""
    label = report.tenant.name or report.tenant.domain or report.tenant.id
    statuses = {item.id: item.status for item in report.items}
    titles = {item.id: item.catalog_name or item.title for item in report.items}
    if previous is None:
        snapshot = Snapshot(tenant=report.tenant.id, name=report.tenant.name, domain=report.tenant.domain,
                            version=report.catalog_version, verdict=report.verdict, at=now,
                            statuses={k: v for k, v in statuses.items() if v is not CheckStatus.unknown},
                            titles=titles,
                            last_good={k: now for k, v in statuses.items() if v is CheckStatus.passed},
                            unknown_streak=1 if report.verdict is Verdict.unknown else 0)
        return snapshot, Change(kind=ChangeKind.baseline, tenant=snapshot.tenant, label=label, verdict_before=None,
                                verdict_after=report.verdict, at=now)
    base = previous.model_copy(update={"name": report.tenant.name or previous.name,
                                       "domain": report.tenant.domain or previous.domain})
    if report.verdict is Verdict.unknown:
        streak = previous.unknown_streak + 1
        snapshot = base.model_copy(update={"unknown_streak": streak})
        kind = ChangeKind.unknown if streak == UNKNOWN_STREAK_TO_ANNOUNCE else ChangeKind.none
        return snapshot, Change(kind=kind, tenant=previous.tenant, label=label, verdict_before=previous.verdict,
                                verdict_after=report.verdict, since=previous.at, at=now,
                                reason=report.common_failure or "Microsoft could not be read")
    merged = dict(previous.statuses)
    last_good = dict(previous.last_good)
    changes: list[ItemChange] = []
    for check, status in statuses.items():
        if status is CheckStatus.unknown:
            continue  # no news about this item: it keeps its last known status
        before = previous.statuses.get(check)
        if before is not None and (before is CheckStatus.passed) != (status is CheckStatus.passed) and \
                (before in _MISSING or status in _MISSING):
            changes.append(ItemChange(check=check, title=titles.get(check, check),
                                      catalog_name=next((i.catalog_name for i in report.items if i.id == check),
                                                        None),
                                      before=before, after=status, last_good=previous.last_good.get(check)))
        merged[check] = status
        if status is CheckStatus.passed:
            last_good[check] = now
    acknowledged = previous.acknowledged
    if acknowledged is not None:  # a recovered item is no longer acknowledged: its next drift is news
        still = tuple(check for check in acknowledged.items if merged.get(check) in _MISSING)
        acknowledged = acknowledged.model_copy(update={"items": still}) if still else None
    announced = [c for c in changes if not (c.drift and previous.acknowledged is not None
                                            and c.check in previous.acknowledged.items)]
    snapshot = base.model_copy(update={
        "version": report.catalog_version, "verdict": report.verdict, "at": now, "statuses": merged,
        "titles": {**previous.titles, **titles}, "last_good": last_good, "unknown_streak": 0,
        "acknowledged": acknowledged,
    })
    kind = ChangeKind.changed if announced else ChangeKind.none
    return snapshot, Change(kind=kind, tenant=previous.tenant, label=label, verdict_before=previous.verdict,
                            verdict_after=report.verdict, items=tuple(announced), since=previous.at, at=now)


def acknowledge(snapshot: Snapshot, by: str, reason: str, *, now: datetime) -> Snapshot:
    """Everything missing now is acknowledged: not announced again until it recovers and drifts anew."""
    return snapshot.model_copy(update={"acknowledged": Acknowledgement(by=by, reason=reason, at=now,
                                                                       items=tuple(snapshot.missing))})


def snooze(snapshot: Snapshot, *, now: datetime, hours: int = 24) -> Snapshot:
    return snapshot.model_copy(update={"snoozed_until": now + timedelta(hours=hours)})
