"""The layering the guide asks for: Slack listeners, Block Kit builders and the worker call the drift and consent
services, never a service's store (issue 14, part 3). A reach into a store is found in the source, so the test fails
the moment one comes back."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: `runtime.drift.store`, `drift.store.x`, `consent.store.x`, `self.runtime.consent.store`, … (importing a data
#: model such as `bot.drift.store.WatchedTenant` is no reach into a store)
STORE_REACH = re.compile(r"(?<!bot\.)\b(?:drift|consent)\.store\b")


def _callers() -> list[Path]:
    return [*sorted((ROOT / "handlers").rglob("*.py")), ROOT / "bot" / "worker.py", ROOT / "bot" / "worker_fix.py",
            ROOT / "bot" / "ops_monitor.py"]


def test_listeners_and_the_worker_never_reach_a_services_store() -> None:
    reaches = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
               for path in _callers() if path.exists()
               for number, line in enumerate(path.read_text().splitlines(), 1) if STORE_REACH.search(line)]
    assert reaches == [], "call the service instead:\n" + "\n".join(reaches)


def test_the_worker_only_schedules_a_tenants_sweep_step() -> None:
    """observe → settle → who → save lives in the drift service; the worker's check job only schedules."""
    worker = (ROOT / "bot" / "worker.py").read_text()
    body = worker.split("async def check_tenant", 1)[1].split("\nasync def ", 1)[0]
    for step in ("observe(", "record(", "settle(", "who(", "save_who("):
        assert step not in body, step
    assert "sweep_tenant(" in body
