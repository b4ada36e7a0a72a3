"""The drift rules on reports built by hand: what counts as a change, and what is worth saying."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.drift.model import ENDING_NOTICE, ChangeKind, Snapshot, acknowledge, observe
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


def test_acknowledged_drift_is_quiet_in_its_channel_until_the_item_recovers_and_drifts_anew() -> None:
    first, _ = observe(None, report(A=OK, B=OK), now=T0)
    drifted, _ = observe(first, report(A=FAIL, B=OK), now=T0)
    acked = acknowledge(drifted, "C0ACK", "U1", "known", now=T0)
    ack = acked.acknowledged_in("C0ACK")
    assert ack is not None and ack.items == ("graph.A",) and acked.acknowledged_in("C0OTHER") is None
    both, change = observe(acked, report(A=FAIL, B=FAIL), now=T0)
    assert [i.check for i in change.drifted] == ["graph.B"], "B is news, A was known"
    back, change = observe(both, report(A=OK, B=FAIL), now=T0)
    assert back.acknowledged_in("C0ACK") is None or "graph.A" not in back.acknowledged_in("C0ACK").items
    _, change = observe(back, report(A=FAIL, B=FAIL), now=T0)
    assert [i.check for i in change.drifted] == ["graph.A"], "A lost again after it came back: news"


def test_an_acknowledgement_stored_before_they_were_per_channel_holds_for_every_channel() -> None:
    first, _ = observe(None, report(A=OK), now=T0)
    drifted, _ = observe(first, report(A=FAIL), now=T0)
    stored = {**drifted.model_dump(mode="json"),
              "acknowledged": {"by": "U1", "reason": "old", "at": T0.isoformat(), "items": ["graph.A"]}}
    legacy = Snapshot.model_validate(stored)
    ack = legacy.acknowledged_in("C0ANY")
    assert ack is not None and ack.items == ("graph.A",)
    mine = acknowledge(legacy, "C0MINE", "U2", "new", now=T0)
    assert mine.acknowledged_in("C0OTHER") is None, "a channel's own acknowledgement replaces the old one"


def test_a_report_read_before_the_last_snapshot_changes_nothing() -> None:
    first, _ = observe(None, report(A=OK), now=T0)
    later, change = observe(first, report(A=FAIL), now=T0 + timedelta(hours=1))
    assert [i.check for i in change.drifted] == ["graph.A"]
    cached = report(A=OK).model_copy(update={"checked_at": (T0 + timedelta(minutes=30)).isoformat()})
    kept, change = observe(later, cached, now=T0 + timedelta(hours=2))
    assert change.kind is ChangeKind.none and kept == later, "an older reading never moves the snapshot back"
    _, change = observe(kept, report(A=FAIL), now=T0 + timedelta(hours=3))
    assert change.kind is ChangeKind.none, "so the same drift is not announced twice"


def test_what_was_read_is_drift_though_another_part_could_not_be_read() -> None:
    first, _ = observe(None, report(A=OK, B=OK), now=T0)
    half, change = observe(first, report(Verdict.unknown, A=FAIL, B=UNKNOWN), now=T0 + timedelta(hours=1))
    assert change.kind is ChangeKind.changed and [i.check for i in change.drifted] == ["graph.A"]
    assert change.reason is None, "one unreadable check is not announced yet"
    assert half.statuses["graph.A"] is FAIL and half.statuses["graph.B"] is OK
    _, change = observe(half, report(Verdict.unknown, A=FAIL, B=UNKNOWN), now=T0 + timedelta(hours=2))
    assert change.kind is ChangeKind.unknown and change.reason, "the second in a row is said, once"


def test_reports_and_snapshots_are_stored_packed_about_tenfold_smaller() -> None:
    from bot.store import pack, unpack

    snapshot, _ = observe(None, report(**{f"P{n}": OK for n in range(100)}), now=T0)
    text = snapshot.model_dump_json()
    assert unpack(pack(text)) == text and unpack(text.encode()) == text  # older plain JSON still reads
    assert len(pack(text)) * 5 < len(text)


def test_a_role_ending_within_the_notice_is_said_once_then_its_loss_is_drift() -> None:
    def with_end(end: datetime | None, status: CheckStatus = OK) -> Report:
        base = report(Verdict.ready, **{"Security Administrator": status})
        return base.model_copy(update={"role_ends": {"Security Administrator": end.isoformat()} if end else {}})

    end = T0 + timedelta(days=20)
    first, baseline = observe(None, with_end(end), now=T0)
    assert baseline.kind is ChangeKind.baseline
    quiet, change = observe(first, with_end(end), now=T0 + timedelta(days=1))
    assert change.kind is ChangeKind.none, "20 days away: not yet"
    told, change = observe(quiet, with_end(end), now=end - ENDING_NOTICE)
    assert change.kind is ChangeKind.changed and change.announce and not change.items
    assert [(e.catalog_name, e.end) for e in change.ending] == [("Security Administrator", end)]
    again, change = observe(told, with_end(end), now=end - timedelta(days=3))
    assert change.kind is ChangeKind.none, "said once"
    _, change = observe(quiet, with_end(end), now=end + timedelta(minutes=5))
    assert change.kind is ChangeKind.none, "an end already past (Entra not caught up yet) is not 'ending'"
    later = end + timedelta(days=10)  # an administrator extended it: news again when it comes near
    extended, change = observe(again, with_end(later), now=end - timedelta(days=2))
    assert [e.end for e in change.ending] == [later]
    lost, change = observe(extended, with_end(None, FAIL), now=later + timedelta(hours=1))
    assert [(i.check, i.after) for i in change.drifted] == [("graph.Security Administrator", FAIL)]
    assert change.ending == () and lost.ends_told == {}, "a past end is forgotten"
    acked = acknowledge(told, "C0ACK", "U1", "known", now=T0)
    _, change = observe(acked, with_end(later), now=end - timedelta(days=2))
    assert change.for_channel(acked.acknowledged_in("C0ACK")) is not None, "an ending is news in every channel"
