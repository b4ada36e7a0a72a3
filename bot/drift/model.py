"""Drift as pure code: what a tenant's last snapshot and a new readiness report say changed, and whether anyone
should hear about it. No I/O: the store applies this atomically, the worker and the listeners render it.

Rules:
- the first snapshot of a tenant is a baseline: nothing to announce;
- an item going pass → fail/warn is drift, fail/warn → pass is recovery; fail ↔ warn is not a change;
- what was read is compared even when another part of the tenant could not be (verdict `unknown`): a permission
  the Graph half shows lost is drift though Exchange failed; the tenant being unreadable is announced once it lasts
  two checks;
- an item that could not be read keeps its last known status;
- a snapshot is as of when its report was read: a report read before the last snapshot (a cached one) changes
  nothing, so a drift is never announced twice;
- a role held through a time-bound assignment is announced once when its end comes within ENDING_NOTICE (again
  only if the end moves), before it is lost: the loss itself is then drift as usual;
- an acknowledged drift is not announced again in the channel that acknowledged it until the item recovers (other
  channels watching the tenant are told as usual); snoozing is per channel too (in the store, with a TTL).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from bot.readiness.model import CheckStatus, Report, Verdict

UNKNOWN_STREAK_TO_ANNOUNCE = 2
#: How long before a time-bound role assignment ends a watching channel hears of it: time for an administrator to
#: make it permanent (PIM's own expiry reminder is for the assignee; the app has no mailbox).
ENDING_NOTICE = timedelta(days=14)
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


#: Snapshots stored before acknowledgements were per channel held one for every channel.
EVERY_CHANNEL = "*"


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
    acknowledged: dict[str, Acknowledgement] = {}  # by channel
    ends_told: dict[str, datetime] = {}  # check id → the end of its time-bound role already announced

    @field_validator("acknowledged", mode="before")
    @classmethod
    def _per_channel(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, dict) and "by" in value and "items" in value:  # stored before: one for all channels
            return {EVERY_CHANNEL: value}
        return value

    @property
    def label(self) -> str:
        return self.name or self.domain or self.tenant

    def acknowledged_in(self, channel: str) -> Acknowledgement | None:
        return self.acknowledged.get(channel) or self.acknowledged.get(EVERY_CHANNEL)

    @property
    def missing(self) -> list[str]:
        return [check for check, status in self.statuses.items() if status in _MISSING]


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


class RoleEnding(BaseModel):
    """A role held today through a time-bound assignment that ends within ENDING_NOTICE."""

    model_config = ConfigDict(frozen=True)

    check: str
    catalog_name: str
    end: datetime


class Change(BaseModel):
    """The outcome of comparing a report with the last snapshot."""

    kind: ChangeKind
    tenant: str
    label: str
    verdict_before: Verdict | None
    verdict_after: Verdict
    items: tuple[ItemChange, ...] = ()
    since: datetime | None = None  # when the previous snapshot was taken (the window for the directory audit)
    at: datetime  # when the report was read
    reason: str | None = None  # why the tenant could not be read, when that is announced (two checks in a row)
    ending: tuple[RoleEnding, ...] = ()  # roles that will be lost soon (announced once each)

    @property
    def drifted(self) -> tuple[ItemChange, ...]:
        return tuple(item for item in self.items if item.drift)

    @property
    def recovered(self) -> tuple[ItemChange, ...]:
        return tuple(item for item in self.items if not item.drift)

    @property
    def announce(self) -> bool:
        return self.kind in (ChangeKind.changed, ChangeKind.unknown)

    def for_channel(self, acknowledged: Acknowledgement | None) -> Change | None:
        """What a channel is told of this change: drift it acknowledged left out; None when nothing is left."""
        if acknowledged is None:
            return self if self.announce else None
        items = tuple(i for i in self.items if not (i.drift and i.check in acknowledged.items))
        if items == self.items:
            return self if self.announce else None
        if not items and not self.ending and self.reason is None:
            return None
        return self.model_copy(update={"items": items, "kind": ChangeKind.changed if items or self.ending
                                       else ChangeKind.unknown})


def read_time(report: Report, now: datetime) -> datetime:
    """When the report was read from Microsoft (a cached report is older than `now`)."""
    if report.checked_at:
        try:
            return datetime.fromisoformat(report.checked_at)
        except ValueError:
            pass
    return now


def observe(previous: Snapshot | None, report: Report, *, now: datetime) -> tuple[Snapshot, Change]:
    """The new snapshot and what changed, from the last snapshot and a new report."""
    label = report.tenant.name or report.tenant.domain or report.tenant.id
    read_at = read_time(report, now)
    statuses = {item.id: item.status for item in report.items}
    titles = {item.id: item.catalog_name or item.title for item in report.items}
    unreadable = report.verdict is Verdict.unknown
    if previous is None:
        snapshot = Snapshot(tenant=report.tenant.id, name=report.tenant.name, domain=report.tenant.domain,
                            version=report.catalog_version, verdict=report.verdict, at=read_at,
                            statuses={k: v for k, v in statuses.items() if v is not CheckStatus.unknown},
                            titles=titles,
                            last_good={k: read_at for k, v in statuses.items() if v is CheckStatus.passed},
                            unknown_streak=1 if unreadable else 0)
        return snapshot, Change(kind=ChangeKind.baseline, tenant=snapshot.tenant, label=label, verdict_before=None,
                                verdict_after=report.verdict, at=read_at)
    if read_at < previous.at:  # read before what we know (a cached report): no news, and never a step back
        return previous, Change(kind=ChangeKind.none, tenant=previous.tenant, label=label,
                                verdict_before=previous.verdict, verdict_after=previous.verdict, since=previous.at,
                                at=previous.at)
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
            last_good[check] = read_at
    acknowledged = {}  # a recovered item is no longer acknowledged: its next drift is news
    for channel, ack in previous.acknowledged.items():
        still = tuple(check for check in ack.items if merged.get(check) in _MISSING)
        if still:
            acknowledged[channel] = ack.model_copy(update={"items": still})
    ending, ends_told = _ending(previous, report, read_at)
    streak = previous.unknown_streak + 1 if unreadable else 0
    reason = (report.common_failure or "Microsoft could not be read") \
        if streak == UNKNOWN_STREAK_TO_ANNOUNCE else None
    snapshot = previous.model_copy(update={
        "name": report.tenant.name or previous.name, "domain": report.tenant.domain or previous.domain,
        "statuses": merged, "titles": {**previous.titles, **titles}, "last_good": last_good,
        "unknown_streak": streak, "acknowledged": acknowledged, "ends_told": ends_told,
    })
    if not unreadable:
        snapshot = snapshot.model_copy(update={"version": report.catalog_version, "verdict": report.verdict,
                                               "at": read_at})
    elif changes:  # part of it was read and changed: the last verdict no longer holds, and the rest is not known
        snapshot = snapshot.model_copy(update={"verdict": Verdict.unknown})
    kind = ChangeKind.changed if changes or ending else ChangeKind.unknown if reason else ChangeKind.none
    return snapshot, Change(kind=kind, tenant=previous.tenant, label=label, verdict_before=previous.verdict,
                            verdict_after=report.verdict, items=tuple(changes), since=previous.at, at=read_at,
                            reason=reason, ending=ending)


def _ending(previous: Snapshot, report: Report, read_at: datetime) -> tuple[tuple[RoleEnding, ...],
                                                                             dict[str, datetime]]:
    """Roles whose time-bound assignment ends within ENDING_NOTICE and was not announced with this end yet; and
    what has been announced (ends already past are forgotten)."""
    told = {check: end for check, end in previous.ends_told.items() if end > read_at}
    due: list[RoleEnding] = []
    for item in report.items:
        raw = report.role_ends.get(item.catalog_name or "")
        if raw is None or item.catalog_name is None:
            continue
        end = datetime.fromisoformat(raw)
        if end <= read_at:
            continue  # already over (Entra has not removed it yet): its loss is the news, as drift
        if end - read_at <= ENDING_NOTICE and told.get(item.id) != end:
            due.append(RoleEnding(check=item.id, catalog_name=item.catalog_name, end=end))
            told[item.id] = end
    return tuple(due), told


def acknowledge(snapshot: Snapshot, channel: str, by: str, reason: str, *, now: datetime) -> Snapshot:
    """Everything missing now is acknowledged in `channel`: not announced there again until it recovers and drifts
    anew."""
    return snapshot.model_copy(update={"acknowledged": {
        **{c: a for c, a in snapshot.acknowledged.items() if c != EVERY_CHANNEL},
        channel: Acknowledgement(by=by, reason=reason, at=now, items=tuple(snapshot.missing))}})
