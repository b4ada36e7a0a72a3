"""The fleet views at scale, with small numbers: the summary the worker stores and the views read in one call, lists
that say how many they leave out and how to see them, `/itdr watching` naming each tenant by name, domain and id,
and the CLI's streamed import and paged `itdr fleet`. (10,000-tenant figures: bench/fleet_views.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.drift import service as drift_service
from bot.drift.fleet import Fleet, Names, tally
from bot.drift.model import Snapshot
from bot.drift.service import DriftService, Watching
from bot.drift.store import DriftStore, WatchedTenant
from bot.readiness.model import Verdict
from bot.store import RedisConnections, pack
from bot.worker import summarise_fleet
from catalog import load_catalog
from handlers.blocks.drift import fleet_message, watching_message
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim
from tests.test_drift_slack import command, itdr, slack, tenant  # noqa: F401 (the `slack` fixture)

catalog = load_catalog()
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def drift(redis_url: str, redis_prefix: str) -> AsyncIterator[DriftService]:
    redis = RedisConnections(redis_url, redis_prefix)
    yield DriftService(catalog, DriftStore(redis.state), None)
    await redis.aclose()


def watched(n: int) -> WatchedTenant:
    return WatchedTenant(id=f"00000000-0000-4000-8000-{n:012d}", name=f"Tenant {n:03d}",
                         domain=f"t{n:03d}.onmicrosoft.com", added_by="test", added_at=NOW)


def snapshot(tenant: WatchedTenant, verdict: Verdict, at: datetime) -> Snapshot:
    return Snapshot(tenant=tenant.id, name=tenant.name, domain=tenant.domain, version="v6", verdict=verdict, at=at,
                    statuses={"graph.Mail.ReadWrite": "fail" if verdict is Verdict.blocked else "pass"},  # type: ignore
                    titles={"graph.Mail.ReadWrite": "Mail.ReadWrite"})


async def batches(rows: list[tuple[WatchedTenant, Snapshot | None]]) -> AsyncIterator[list[tuple[bytes, bytes | None]]]:
    for start in range(0, len(rows), 4):  # several batches, as the store streams them
        yield [(t.model_dump_json().encode(), pack(s.model_dump_json()) if s else None)
               for t, s in rows[start:start + 4]]


async def test_long_lists_are_counted_whole_and_say_how_to_see_the_rest() -> None:
    tenants = [watched(n) for n in range(30)]
    rows: list[tuple[WatchedTenant, Snapshot | None]] = [
        *[(t, snapshot(t, Verdict.blocked, NOW)) for t in tenants[:10]],
        *[(t, snapshot(t, Verdict.ready, NOW - timedelta(days=3))) for t in tenants[10:20]],
        *[(t, None) for t in reversed(tenants[20:])],  # imported, never read
    ]
    fleet = await tally(batches(rows), now=NOW, limit=3)
    assert fleet.tenants == 30 and fleet.verdicts == {"ready": 10, "degraded": 0, "blocked": 10, "unknown": 0}
    assert fleet.blocked == Names(10, ("Tenant 000", "Tenant 001", "Tenant 002"))
    assert fleet.stale.total == 10 and fleet.stale.left_out == 7
    assert fleet.unread == Names(10, ("Tenant 020", "Tenant 021", "Tenant 022"))
    assert fleet.top_missing == [("Mail.ReadWrite", 10)]
    text = json.dumps(fleet_message(fleet).blocks, ensure_ascii=False)
    assert "*Blocked (10):* Tenant 000, Tenant 001, Tenant 002 and 7 more (`itdr fleet --json` lists them all)" in text
    assert "*Not read yet (10):*" in text
    assert "Not read for more than a day (10)" in text and "Tenant 020" not in text.split("more than a day")[1][:60]
    # Stored and read back as it was; everything when asked for all.
    assert Fleet.load(fleet.dump(), generation=0) == fleet
    assert (await tally(batches(rows), now=NOW, limit=None)).unread.left_out == 0


def test_a_channel_watching_more_than_fits_says_how_many_are_left_out() -> None:
    rows = [Watching(watched(n), None, None, None, "C1") for n in range(3)]
    message = watching_message("C1", rows, NOW, total=250)
    text = json.dumps(message.blocks, ensure_ascii=False)
    assert message.text == "This channel watches 250 tenants."
    assert "and 247 more (`itdr tenants --json` lists them all)" in text
    assert "*Tenant 000* · t000.onmicrosoft.com · `00000000-0000-4000-8000-000000000000` — not read yet" in text


async def test_the_worker_stores_the_summary_and_views_read_it_until_the_fleet_changes(
    drift: DriftService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drift_service, "SMALL_FLEET", 0)  # every fleet is "big": views read only what is stored
    store = drift.store
    await store.watch_many([(watched(n), "C1") for n in range(5)])
    ctx: dict[str, Any] = {"runtime": type("R", (), {"drift": drift})()}
    assert await summarise_fleet(ctx) == 5
    assert await summarise_fleet(ctx) == 0, "nothing changed: nothing recomputed"
    summary = await drift.fleet_summary(NOW)
    assert summary.current and summary.tenants == 5 and summary.unread.total == 5
    await store.watch(watched(99), "C1")
    stale = await drift.fleet_summary(NOW)
    assert stale.tenants == 5 and not stale.current
    assert "As of" in json.dumps(fleet_message(stale).blocks)
    assert await summarise_fleet(ctx) == 6
    assert (await drift.fleet_summary(NOW)).tenants == 6
    # Unchanged, but time moves on ("not read for more than a day" depends on it): recomputed every 10 minutes.
    assert await drift.summarise_fleet(datetime.now(UTC)) is None
    assert await drift.summarise_fleet(datetime.now(UTC) + timedelta(minutes=11)) is not None


async def test_watching_names_each_tenant_by_name_domain_and_id(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft  # noqa: F811
) -> None:
    scenario = tenant(microsoft, "Contoso")
    await command(slack, fake_slack, f"watch {scenario.tenant_id}")
    response, _ = await slack.command("watching")
    text = json.dumps(response.json()["blocks"], ensure_ascii=False)
    assert f"*Contoso* · {scenario.domains[0]} · `{scenario.tenant_id}`" in text
    fleet, _ = await command(slack, fake_slack, "fleet")
    assert fleet.startswith("1 watched tenant; blocked: 0.")


def test_import_streams_refuses_extra_columns_by_line_and_fleet_pages_its_names(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    csv_file = tmp_path / "tenants.csv"
    lines = ["tenant,channel"] + [f"t{n:03d}.onmicrosoft.com,C0MANY" for n in range(30)]
    lines.insert(5, "extra.onmicrosoft.com,C0MANY,surplus")
    csv_file.write_text("\n".join(lines) + "\n")
    env = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    result = itdr("tenants", "import", str(csv_file), env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"{csv_file}: line 6: expected `tenant,channel`, found 3 columns"]
    assert result.stdout.strip() == "Imported 30 rows (30 new subscriptions); 1 bad row skipped."
    text = itdr("fleet", env=env).stdout
    assert "Not read yet (30): t000.onmicrosoft.com" in text and "and 5 more (`--json` for all)" in text
    assert "more than a day" not in text
    full = json.loads(itdr("fleet", "--json", env=env).stdout)
    assert len(full["not_read_yet"]) == 30 and full["stale"] == []
    listed = itdr("tenants", env=env).stdout.splitlines()
    assert len(listed) == 30 and all("not read yet" in line for line in listed)


def test_import_shows_its_progress_on_a_terminal(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    import os
    import pty
    import subprocess
    import sys

    from tests.test_drift_slack import ROOT

    csv_file = tmp_path / "tenants.csv"
    csv_file.write_text("tenant,channel\n" + "".join(f"t{n}.onmicrosoft.com,C0TTY\n" for n in range(1500)))
    primary, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ITDR_", "REDIS_"))}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "tenants", "import", str(csv_file)], stderr=terminal,
                          stdout=subprocess.PIPE, text=True, timeout=120, check=False,
                          env=env | {"PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix})
    os.close(terminal)
    shown = os.read(primary, 65536).decode()
    os.close(primary)
    assert done.returncode == 0
    assert "1,000 rows imported…" in shown and "1,500 rows imported…" in shown
    assert done.stdout.strip() == "Imported 1500 rows (1500 new subscriptions); 0 bad rows skipped."
