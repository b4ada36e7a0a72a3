"""The drift rules on reports built by hand: what counts as a change, and what is worth saying."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.drift.model import ChangeKind, acknowledge, observe, snooze
from bot.readiness.model import CheckGroup, CheckItem, CheckStatus, Report, TenantInfo, Verdict

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def report(verdict: Verdict = Verdict.ready, **statuses: CheckStatus) -> Report:
    items = [CheckItem(id=f"graph.{name}", status=status, title=name, detail="", catalog_name=name,
                       group=CheckGroup.graph) for name, status in statuses.items()]
    return Report(tenant=TenantInfo(id="t1", name="Contoso"), catalog_version="v6", satisfied_version=None,
                  verdict=verdict, items=items)


OK = CheckStatus.passed
FAIL = CheckStatus.failed
WARN = CheckStatus.warn
UNKNOWN = CheckStatus.unknown


def test_the_first_snapshot_is_a_baseline() -> None:
    snapshot, change = observe(None, report(A=OK, B=FAIL), now=T0)
    assert change.kind is ChangeKind.baseline and not change.announce
    assert snapshot.last_good == {"graph.A": T0}


def test_pass_to_fail_is_drift_and_back_is_recovery_fail_to_warn_is_nothing() -> None:
    first, _ = observe(None, report(A=OK, B=FAIL, C=FAIL), now=T0)
    second, change = observe(first, report(Verdict.blocked, A=FAIL, B=OK, C=WARN), now=T0 + timedelta(hours=6))
    assert change.kind is ChangeKind.changed
    assert [(i.check, i.before, i.after) for i in change.drifted] == [("graph.A", OK, FAIL)]
    assert [(i.check, i.before, i.after) for i in change.recovered] == [("graph.B", FAIL, OK)]
    assert change.drifted[0].last_good == T0
    _, again = observe(second, report(Verdict.blocked, A=FAIL, B=OK, C=WARN), now=T0 + timedelta(hours=12))
    assert again.kind is ChangeKind.none


def test_an_unreadable_item_keeps_its_status_and_unknown_is_said_on_the_second_sweep_only() -> None:
    first, _ = observe(None, report(A=OK), now=T0)
    second, change = observe(first, report(Verdict.blocked, A=UNKNOWN), now=T0)
    assert change.kind is ChangeKind.none and second.statuses["graph.A"] is OK
    unknown1, change = observe(second, report(Verdict.unknown, A=UNKNOWN), now=T0)
    assert change.kind is ChangeKind.none
    unknown2, change = observe(unknown1, report(Verdict.unknown, A=UNKNOWN), now=T0)
    assert change.kind is ChangeKind.unknown and change.announce
    _, change = observe(unknown2, report(Verdict.unknown, A=UNKNOWN), now=T0)
    assert change.kind is ChangeKind.none, "said once"


def test_acknowledged_drift_is_quiet_until_the_item_recovers_and_drifts_anew() -> None:
    first, _ = observe(None, report(A=OK, B=OK), now=T0)
    drifted, _ = observe(first, report(A=FAIL, B=OK), now=T0)
    acked = acknowledge(drifted, "U1", "known", now=T0)
    assert acked.acknowledged is not None and acked.acknowledged.items == ("graph.A",)
    both, change = observe(acked, report(A=FAIL, B=FAIL), now=T0)
    assert [i.check for i in change.drifted] == ["graph.B"], "B is news, A is acknowledged"
    back, change = observe(both, report(A=OK, B=FAIL), now=T0)
    assert back.acknowledged is None or "graph.A" not in back.acknowledged.items
    _, change = observe(back, report(A=FAIL, B=FAIL), now=T0)
    assert [i.check for i in change.drifted] == ["graph.A"], "A lost again after it came back: news"


def test_snooze_lasts_a_day() -> None:
    snapshot, _ = observe(None, report(A=OK), now=T0)
    snoozed = snooze(snapshot, now=T0)
    assert snoozed.snoozed(T0 + timedelta(hours=23)) and not snoozed.snoozed(T0 + timedelta(hours=25))


def test_reports_and_snapshots_are_stored_packed_about_tenfold_smaller() -> None:
    from bot.store import pack, unpack

    snapshot, _ = observe(None, report(**{f"P{n}": OK for n in range(100)}), now=T0)
    text = snapshot.model_dump_json()
    assert unpack(pack(text)) == text and unpack(text.encode()) == text  # older plain JSON still reads
    assert len(pack(text)) * 5 < len(text)
