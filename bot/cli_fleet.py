"""The fleet commands of the `itdr` CLI: `worker`, `sweep`, `watch`, `unwatch`, `tenants [import FILE.csv]`, `fleet`.

Each opens the Runtime against the shared Redis (REDIS_URL); Redis down is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bot.settings import Mode
from catalog.words import counted

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


def _fail(args: argparse.Namespace, message: str, code: int = EXIT_USAGE) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": "usage" if code == EXIT_USAGE else "failed", "message": message}))
    else:
        print(f"itdr: {message}", file=sys.stderr)
    return code


def _with_runtime(args: argparse.Namespace, mode: Mode, work: Callable[[Any], Awaitable[T]]) -> T | int:
    """Run `work(runtime)` in a fresh event loop; Redis faults become one line and exit status 2."""
    from bot.cli_slack import settings_for
    from bot.runtime import Runtime
    from bot.store import StateUnavailable

    settings = settings_for(mode)
    if settings is None:
        return EXIT_USAGE
    if settings.redis_dsn is None:
        return _fail(args, "REDIS_URL is not set: watched tenants and sweeps live in the Redis the bot and its "
                           "workers share.")

    async def run() -> T:
        async with Runtime.open(settings, mode) as runtime:
            return await work(runtime)

    try:
        return asyncio.run(run())
    except StateUnavailable as exc:
        return _fail(args, str(exc))


def cmd_worker(args: argparse.Namespace) -> int:
    from bot.cli_slack import settings_for
    from bot.worker import run

    settings = settings_for(Mode.WORKER)
    return EXIT_USAGE if settings is None else run(settings)


def cmd_sweep(args: argparse.Namespace) -> int:
    from bot.drift.sweep import queue_for, sweep_now

    async def work(runtime: Any) -> int:
        store = runtime.drift.store
        if not await store.tenant_ids():  # nothing to queue, and no worker needed to say so
            empty = {"tenants": 0, "checked": 0, "changed": 0, "notified": 0, "unknown": 0, "duration_ms": 0}
            print(json.dumps(empty if args.wait else {"sweep": None}) if args.json else
                  "No tenant is watched: nothing to sweep. `itdr watch TENANT --channel C…` adds one.")
            return EXIT_OK
        start = await sweep_now(queue_for(runtime.redis, runtime.settings), store, runtime.settings,
                                now=datetime.now(UTC), spread=args.spread)
        sweep = start.id
        if not args.wait:
            if args.json:
                print(json.dumps({"sweep": sweep, "already_running": start.already_running}))
            elif start.already_running:
                print(f"A sweep is already running ({await _sweep_so_far(store, sweep)}); "
                      "`itdr sweep --wait` waits for it.")
            else:
                print(f"Queued sweep {sweep}; `itdr worker` runs it.")
            return EXIT_OK
        if start.already_running and not args.json:
            print(f"A sweep is already running ({await _sweep_so_far(store, sweep)}): waiting for it.",
                  file=sys.stderr)
        live = not args.json and sys.stderr.isatty()  # progress for a person watching, nothing in a pipe or a log
        shown = ""
        deadline = time.monotonic() + args.timeout
        while True:
            progress = await store.progress(sweep)
            if progress is not None and progress.delivered:  # finished, and its announcements posted
                break
            if live and progress is not None:
                line = _progress_line(progress)
                if line != shown:
                    print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
                    shown = line
            if time.monotonic() > deadline:
                if shown:
                    print(file=sys.stderr)
                print(f"itdr: the sweep did not finish within {args.timeout:g} s (is an `itdr worker` running?)",
                      file=sys.stderr)
                return EXIT_FAIL
            await asyncio.sleep(0.5)
        if shown:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)
        data = progress.to_json()
        print(json.dumps(data) if args.json else
              f"Sweep {sweep}: {data['checked']} of {counted(data['tenants'], 'tenant')} checked, "
              f"{data['changed']} changed, {data['notified']} notified, {data['unknown']} could not be read, "
              f"in {data['duration_ms']} ms.")
        return EXIT_OK

    return int(_with_runtime(args, Mode.CLI, work))


def _progress_line(progress: Any) -> str:
    if progress.done:
        return f"Announcing: {progress.pending} still to post ({counted(progress.notified, 'tenant')} notified so far)"
    return f"Sweeping: {progress.checked}/{progress.tenants} checked, {progress.changed} changed so far"


async def _sweep_so_far(store: Any, sweep: str) -> str:
    progress = await store.progress(sweep)
    if progress is None:
        return f"sweep {sweep}"
    return (f"sweep {sweep}, started {progress.started.strftime('%H:%M:%S')} UTC, {progress.checked} of "
            f"{counted(progress.tenants, 'tenant')} checked")


def _check_channel(channel: str) -> bool:
    from handlers.payloads import parse_channel

    return parse_channel(channel) == channel


def cmd_watch(args: argparse.Namespace) -> int:
    from bot.drift.service import CannotWatch
    from bot.microsoft.errors import InvalidTenant
    from bot.microsoft.http import Priority
    from bot.microsoft.tenant import parse_tenant

    try:
        tenant = parse_tenant(args.tenant)
    except InvalidTenant as exc:
        return _fail(args, exc.message)
    if not _check_channel(args.channel):
        return _fail(args, f"--channel must be a Slack channel id (C…), not {args.channel[:40]!r}.")

    async def work(runtime: Any) -> int:
        drift = runtime.drift
        try:
            tenant_id = await drift.resolve(runtime.readiness.request(tenant.value))
        except CannotWatch as exc:
            return _fail(args, str(exc))
        report = await drift.check(tenant_id, priority=Priority.HIGH, fresh=False)
        new = await drift.watch(tenant_id, report, args.channel, "itdr cli", now=datetime.now(UTC))
        label = report.tenant.name or report.tenant.domain or tenant_id
        print(f"{args.channel} {'now watches' if new else 'already watched'} {label} ({tenant_id}): verdict "
              f"{report.verdict.value}.")
        return EXIT_OK

    from bot.cli_slack import settings_for

    settings = settings_for(Mode.CLI)
    if settings is not None and not settings.readiness_configured:
        return _fail(args, "watching a tenant needs the readiness check: set ITDR_CLIENT_ID, ITDR_CLIENT_SECRET and "
                           "ITDR_TARGET_APP_ID.")
    return int(_with_runtime(args, Mode.CLI, work))


def cmd_unwatch(args: argparse.Namespace) -> int:
    from bot.microsoft.errors import InvalidTenant
    from bot.microsoft.tenant import parse_tenant

    try:
        tenant = parse_tenant(args.tenant)
    except InvalidTenant as exc:
        return _fail(args, exc.message)

    async def work(runtime: Any) -> int:
        ended, _ = await runtime.drift.unwatch_matching(tenant.value, args.channel)
        print(f"{counted(ended, 'subscription')} ended.")
        return EXIT_OK if ended else EXIT_FAIL

    return int(_with_runtime(args, Mode.CLI, work))


def cmd_tenants(args: argparse.Namespace) -> int:
    if args.action == "import":
        return _import(args)

    async def work(runtime: Any) -> int:
        from bot.store import unpack

        listed = 0
        # Streamed a batch at a time: 250,000 tenants never sit in memory at once, and the first lines come at once.
        async for batch in runtime.drift.store.listing_batches():
            for raw_tenant, raw_snapshot, channels in batch:
                tenant = json.loads(raw_tenant)
                snapshot = json.loads(unpack(raw_snapshot)) if raw_snapshot else {}
                row = {"tenant": tenant["id"], "domain": tenant.get("domain"), "name": tenant.get("name"),
                       "channels": channels, "verdict": snapshot.get("verdict"), "checked_at": snapshot.get("at")}
                if args.json:
                    sys.stdout.write(("[\n" if listed == 0 else ",\n") + json.dumps(row))
                else:
                    sys.stdout.write(f"{row['tenant']}  {(row['domain'] or ''):<36} "
                                     f"{(row['verdict'] or 'not read yet'):<12} {' '.join(channels)}\n")
                listed += 1
        if args.json:
            print("[]" if listed == 0 else "\n]")
        elif not listed:
            print("No tenant is watched. `itdr watch TENANT --channel C…` or `itdr tenants import FILE.csv`.")
        return EXIT_OK

    return int(_with_runtime(args, Mode.CLI, work))


IMPORT_BATCH = 1000  # rows written per Redis transaction
BAD_ROWS_SHOWN = 100  # bad rows told line by line; the rest are counted


def _import(args: argparse.Namespace) -> int:
    """`tenant,channel` rows, streamed: read, checked and written `IMPORT_BATCH` at a time (memory stays flat
    whatever the file's size), with progress on a terminal. Bad rows are reported by their line in the file (the
    header is line 1) and skipped; the good ones are imported."""
    from bot.drift.store import WatchedTenant
    from bot.drift.sweep import queue_for, summarise_soon
    from bot.microsoft.errors import InvalidTenant
    from bot.microsoft.tenant import parse_tenant

    path = Path(args.file or "")
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
        header = next(csv.reader([handle.readline()]), [])
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(args, f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}")
    if [cell.strip().lower() for cell in header] != ["tenant", "channel"]:
        handle.close()
        return _fail(args, f"{path}: line 1 must be the header `tenant,channel`.")
    progress = sys.stderr.isatty() and not args.json
    counts = {"good": 0, "new": 0, "bad": 0}
    bad: list[str] = []

    def refuse(message: str) -> None:
        counts["bad"] += 1
        if len(bad) < BAD_ROWS_SHOWN:
            bad.append(message)
            print(f"{path}: {message}", file=sys.stderr)

    def rows(now: datetime) -> Any:
        for line, row in enumerate(csv.reader(handle), start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != 2:
                refuse(f"line {line}: expected `tenant,channel`" +
                       (f", found {len(row)} columns" if len(row) > 2 else ""))
                continue
            try:
                tenant = parse_tenant(row[0]).value
            except InvalidTenant:
                refuse(f"line {line}: {row[0].strip()[:60]!r} is not a tenant id or domain")
                continue
            channel = row[1].strip()
            if not _check_channel(channel):
                refuse(f"line {line}: {channel[:40]!r} is not a Slack channel id (C…)")
                continue
            # A domain is kept as given (the import works offline); the first sweep files it under its GUID.
            yield WatchedTenant(id=tenant, domain=None if _is_guid(tenant) else tenant, added_by="itdr import",
                                added_at=now), channel

    async def work(runtime: Any) -> int:
        store = runtime.drift.store
        batch: list[tuple[Any, str]] = []

        async def flush() -> None:
            counts["new"] += await store.watch_many(batch)
            counts["good"] += len(batch)
            batch.clear()
            if progress:
                rows_word = "row" if counts["good"] == 1 else "rows"
                print(f"\r{counts['good']:,} {rows_word} imported…", end="", file=sys.stderr, flush=True)

        for row in rows(datetime.now(UTC)):
            batch.append(row)
            if len(batch) >= IMPORT_BATCH:
                await flush()
        await flush()
        if progress:
            print(file=sys.stderr)
        if counts["good"]:
            await summarise_soon(queue_for(runtime.redis, runtime.settings))
        return EXIT_OK

    with handle:
        try:
            result = _with_runtime(args, Mode.CLI, work)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            return _fail(args, f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}")
    if result != EXIT_OK:
        return int(result)
    if counts["bad"] > len(bad):
        print(f"{path}: and {counted(counts['bad'] - len(bad), 'more bad row')}", file=sys.stderr)
    if args.json:
        print(json.dumps({"imported": counts["good"], "new": counts["new"], "bad": bad,
                          "bad_rows": counts["bad"]}))
    else:
        print(f"Imported {counted(counts['good'], 'row')} ({counted(counts['new'], 'new subscription')}); "
              f"{counted(counts['bad'], 'bad row')} skipped.")
    return EXIT_OK if not counts["bad"] else EXIT_FAIL


def _is_guid(text: str) -> bool:
    from bot.microsoft.tenant import is_guid

    return is_guid(text)


def cmd_fleet(args: argparse.Namespace) -> int:
    async def work(runtime: Any) -> int:
        from bot.drift.fleet import PAGE, Names

        # `--json` lists every name: computed now, streaming. The text shows one page of each list: the worker's
        # summary when it is up to date, else computed now.
        now = datetime.now(UTC)
        fleet = None if args.json else await runtime.drift.fleet_summary(now)
        if fleet is None or not fleet.current:
            fleet = await runtime.drift.fleet(now, limit=None if args.json else PAGE)
        if args.json:
            print(json.dumps(fleet.to_json(), indent=2))
            return EXIT_OK

        def names(title: str, names: Names) -> None:
            if names.total:
                more = f" and {names.left_out} more (`--json` for all)" if names.left_out else ""
                print(f"{title} ({names.total}): " + ", ".join(names.first) + more)

        verdicts = ", ".join(f"{verdict} {count}" for verdict, count in fleet.verdicts.items())
        print(f"{counted(fleet.tenants, 'watched tenant')}: {verdicts}")
        if fleet.top_missing:
            print("Most often missing: " + ", ".join(f"{n} ({c})" for n, c in fleet.top_missing))
        names("Blocked", fleet.blocked)
        names("Not read for more than a day", fleet.stale)
        names("Not read yet", fleet.unread)
        names("Roles ending within two weeks", fleet.ending)
        return EXIT_OK

    return int(_with_runtime(args, Mode.CLI, work))


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def add_commands(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    worker = subparsers.add_parser("worker", help="run a sweep worker (SAQ) on the shared Redis; run any number")
    worker.set_defaults(func=cmd_worker)

    sweep = subparsers.add_parser("sweep", parents=[common], help="check every watched tenant now (workers run it)")
    sweep.add_argument("--wait", action="store_true", help="wait for the sweep to finish and print what it found")
    sweep.add_argument("--timeout", type=float, default=3600, help="seconds to wait at most (default 3600)")
    sweep.add_argument("--spread", type=_seconds, default=0, metavar="SECONDS",
                       help="spread the checks' starts over SECONDS (default 0: all start now; the scheduled sweep "
                            "spreads over ITDR_SWEEP_SPREAD_SECONDS)")
    sweep.set_defaults(func=cmd_sweep)

    watch = subparsers.add_parser("watch", parents=[common], help="post drift of a tenant to a Slack channel")
    watch.add_argument("tenant", help="tenant id (GUID) or a verified domain")
    watch.add_argument("--channel", required=True, help="Slack channel id, e.g. C0123456789")
    watch.set_defaults(func=cmd_watch)

    unwatch = subparsers.add_parser("unwatch", parents=[common], help="stop watching a tenant (in one channel)")
    unwatch.add_argument("tenant")
    unwatch.add_argument("--channel", help="only this channel (default: every channel)")
    unwatch.set_defaults(func=cmd_unwatch)

    tenants = subparsers.add_parser("tenants", parents=[common], help="the watched tenants, or `import FILE.csv`")
    tenants.add_argument("action", nargs="?", choices=["import"], help="import FILE.csv (columns tenant,channel)")
    tenants.add_argument("file", nargs="?", help="the CSV file to import")
    tenants.set_defaults(func=cmd_tenants)

    fleet = subparsers.add_parser("fleet", parents=[common], help="every watched tenant at a glance")
    fleet.set_defaults(func=cmd_fleet)
