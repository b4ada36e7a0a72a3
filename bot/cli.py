"""The `itdr` command line: catalog answers in the terminal, and the entry points of the bot itself."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from catalog import Catalog, UnknownVersion, load_catalog, normalize

if TYPE_CHECKING:  # the command line imports what a command needs only when it runs (a fast `itdr why`)
    from bot.microsoft.tenant import TenantRef
    from bot.settings import Settings

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command line that cannot be answered as typed; the message is one line for the user."""

    def __init__(self, prog: str, message: str):
        super().__init__(f"{prog}: {message}")
        self.message = f"{prog}: {message} (see `{prog} --help`)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (text on stderr, or JSON with --json), exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not {text!r}")
    return value


def _emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    if args.json:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(text())


def cmd_why(args: argparse.Namespace, catalog: Catalog) -> int:
    from bot import terminal

    query = " ".join(args.name)
    if not normalize(query).strip():
        raise UsageError("itdr why", "NAME is empty; give a permission or role, e.g. `itdr why Mail.ReadWrite`")
    lookup = catalog.lookup(query)
    if lookup.item is None:
        data = {"error": "not_found", "query": lookup.query, "suggestions": [i.name for i in lookup.suggestions]}
        _emit(args, data, lambda: terminal.render_not_found(catalog, lookup))
        return EXIT_NOT_FOUND
    item = lookup.item
    _emit(args, item.to_json(), lambda: terminal.render_item(catalog, item))
    return EXIT_OK


def cmd_search(args: argparse.Namespace, catalog: Catalog) -> int:
    from bot import terminal

    words = " ".join(args.words)
    if not normalize(words).strip():
        raise UsageError("itdr search", "WORDS is empty; give a word or flag, e.g. `itdr search audit`")
    items = catalog.search(words, limit=args.limit)
    _emit(
        args,
        [item.to_json() for item in items],
        lambda: terminal.render_items(items, f"No item matches {words!r}. Try fewer or other words."),
    )
    return EXIT_OK if items else EXIT_NOT_FOUND


def cmd_versions(args: argparse.Namespace, catalog: Catalog) -> int:
    from bot import terminal

    _emit(args, [r.to_json() for r in catalog.revisions], lambda: terminal.render_versions(catalog.revisions))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, catalog: Catalog) -> int:
    from bot import terminal

    diff = catalog.diff(args.from_version, args.to_version)
    _emit(args, diff.to_json(), lambda: terminal.render_diff(catalog, diff))
    return EXIT_OK


def cmd_manifest(args: argparse.Namespace, catalog: Catalog) -> int:
    version = catalog.revision(args.version).version if args.version else catalog.latest.version
    access = catalog.required_resource_access(version)
    # Always JSON: the output is meant to be pasted into an app registration manifest.
    json.dump({"requiredResourceAccess": access}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


def _usage_error(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": "usage", "message": message}))
    else:
        print(f"itdr: {message}", file=sys.stderr)
    return EXIT_USAGE


def _tenant_asked(args: argparse.Namespace, catalog: Catalog) -> tuple[Settings, TenantRef, str] | int:
    """`TENANT [--version vN]` of `check` and `fix`, with the settings to read it: bad input gets its answer (an
    exit status) before any configuration or network is touched."""
    from bot.cli_slack import settings_for
    from bot.microsoft.errors import InvalidTenant
    from bot.microsoft.tenant import parse_tenant
    from bot.settings import Mode

    try:
        tenant = parse_tenant(args.tenant)
        version = (catalog.revision(args.version) if args.version else catalog.latest).version
    except InvalidTenant as exc:
        return _usage_error(args, exc.message)
    settings = settings_for(Mode.CLI)
    if settings is None:
        return EXIT_USAGE
    if not settings.readiness_configured:
        return _usage_error(args, NOT_CONFIGURED)
    return settings, tenant, version


def cmd_check(args: argparse.Namespace, catalog: Catalog) -> int:
    import asyncio

    from bot import terminal
    from bot.readiness.model import Report, Verdict
    from bot.runtime import Runtime
    from bot.settings import Mode

    asked = _tenant_asked(args, catalog)
    if isinstance(asked, int):
        return asked
    settings, tenant, version = asked

    async def check() -> Report:
        async with Runtime.open(settings, Mode.CLI, catalog=catalog) as runtime:
            assert runtime.readiness is not None
            request = runtime.readiness.request(tenant.value, version)
            return await runtime.readiness.run(request, fresh=args.fresh)

    report = asyncio.run(check())
    _emit(args, report.to_json(), lambda: terminal.render_report(report))
    return {Verdict.ready: EXIT_OK, Verdict.degraded: EXIT_NOT_FOUND, Verdict.blocked: EXIT_NOT_FOUND}.get(
        report.verdict, EXIT_USAGE)


def cmd_fix(args: argparse.Namespace, catalog: Catalog) -> int:
    """A tenant's fix plan: ordered steps, who, how and Microsoft's wait; or one PowerShell script for it."""
    import asyncio
    from datetime import UTC, datetime

    from bot import terminal
    from bot.readiness.fix import Plan, PlanRefused, script
    from bot.runtime import Runtime
    from bot.settings import Mode

    asked = _tenant_asked(args, catalog)
    if isinstance(asked, int):
        return asked
    settings, tenant, version = asked

    async def plan() -> Plan:
        async with Runtime.open(settings, Mode.CLI, catalog=catalog) as runtime:
            assert runtime.readiness is not None
            request = runtime.readiness.request(tenant.value, version)
            return (await runtime.readiness.plan(request, fresh=args.fresh))[1]

    try:
        fix = asyncio.run(plan())
    except PlanRefused as exc:
        # The same answer as `check` for a tenant nothing could be read from: never a plan from a failed read.
        message = f"could not check {tenant.value}: {exc}"
        if args.json:
            print(json.dumps({"error": "unknown", "message": message}, ensure_ascii=False))
        else:
            print(f"itdr: {message}", file=sys.stderr)
        return EXIT_USAGE
    if args.script:
        sys.stdout.write(script(fix, generated_at=datetime.now(UTC).isoformat(timespec="seconds")))
        return EXIT_OK
    _emit(args, fix.to_json(), lambda: terminal.render_plan(fix))
    return EXIT_NOT_FOUND if fix.steps else EXIT_OK  # like `check`: 1 while something is left to do


NOT_CONFIGURED = ("the tenant readiness check is not configured: set ITDR_CLIENT_ID, ITDR_CLIENT_SECRET (or "
                  "ITDR_CLIENT_CERTIFICATE) and ITDR_TARGET_APP_ID (see README, 'Tenant readiness check').")


def cmd_audit(args: argparse.Namespace, catalog: Catalog) -> int:
    """A tenant's consent audit trail, oldest first."""
    import asyncio

    from bot.cli_slack import settings_for
    from bot.consent.store import AuditRecord
    from bot.microsoft.errors import InvalidTenant
    from bot.microsoft.tenant import parse_tenant
    from bot.runtime import Runtime
    from bot.settings import Mode
    from bot.store import StateUnavailable

    try:
        parse_tenant(args.tenant)
    except InvalidTenant as exc:
        return _usage_error(args, exc.message)
    settings = settings_for(Mode.CLI)
    if settings is None:
        return EXIT_USAGE
    if settings.redis_dsn is None:  # a throwaway Redis would answer "no consent activity", which is not true
        return _usage_error(args, "REDIS_URL is not set: the consent audit trail lives in the Redis the bot "
                                  "records it in.")

    async def read() -> list[AuditRecord]:
        async with Runtime.open(settings, Mode.CLI, catalog=catalog) as runtime:
            return await runtime.consent.audit(args.tenant)

    try:
        records = asyncio.run(read())
    except StateUnavailable as exc:
        return _usage_error(args, str(exc))
    _emit(args, [record.to_json() for record in records], lambda: "\n".join(
        f"{r.at}  {r.action:<16} {r.actor:<24} {r.request_id}  {r.detail}" for r in records
    ) or f"No consent activity is recorded for {args.tenant}.")
    return EXIT_OK


def cmd_start(args: argparse.Namespace, catalog: Catalog) -> int:
    """The main job: the Slack bot when Slack tokens are set, the console (same app, in the terminal) otherwise."""
    from bot.cli_slack import start_main_job

    return start_main_job()


DESCRIPTION = (
    "Onboard Microsoft 365 tenants to Huntress Managed ITDR: explain, search and compare the vendor's permission "
    "catalog (why, search, versions, diff, manifest); check what the ITDR app really has in a tenant (check); ask "
    "approvers for consent in Slack or the console (`consent`, then audit); watch tenants for drift and sweep them "
    "(watch, unwatch, tenants, fleet, sweep, worker); grant what a tenant lacks (fix) and diagnose a deployment "
    "(doctor), where installed. `itdr help` lists the /itdr commands of Slack and the console."
)


def _conversation_help() -> str:
    """The /itdr commands, as Slack's and the console's `help` lists them."""
    from handlers.blocks.answers import HELP_LINES

    width = max(len(usage) for usage, _ in HELP_LINES)
    lines = [f"  {usage:<{width}}  {what.replace('`', '')}" for usage, what in HELP_LINES]
    return ("In Slack (/itdr COMMAND) and in the console (`itdr console`, or `./run` without Slack tokens):\n"
            + "\n".join(lines) + "\n\nOn the command line: `itdr --help`, and `itdr COMMAND --help` for one command.")


def cmd_help(args: argparse.Namespace, catalog: Catalog) -> int:
    print(_conversation_help())
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from bot.doctor import doctor
    from bot.logging import setup_logging

    setup_logging("ERROR")  # doctor says what it finds itself; libraries' retry warnings would only repeat it
    return doctor(as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="itdr",
        description=textwrap.fill(DESCRIPTION, 100),
        epilog=_conversation_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    why = sub.add_parser("why", parents=[common], help="explain one permission or role (typos forgiven)")
    why.add_argument("name", nargs="+", help="e.g. Mail.ReadWrite, 'Exchange Administrator'")
    why.set_defaults(handler=cmd_why)

    search = sub.add_parser("search", parents=[common], help="find items by words (purpose, flags, Microsoft text)")
    search.add_argument("words", nargs="+", help="e.g. phishing, audit, CPV, future")
    search.add_argument("--limit", type=positive_int, default=10, help="most results to show (default 10, at least 1)")
    search.set_defaults(handler=cmd_search)

    versions = sub.add_parser("versions", parents=[common], help="the document's revision history")
    versions.set_defaults(handler=cmd_versions)

    diff = sub.add_parser("diff", parents=[common], help="what changed between two revisions")
    diff.add_argument("from_version", nargs="?", metavar="FROM", help="default: the revision before TO")
    diff.add_argument("to_version", nargs="?", metavar="TO", help="default: the latest revision")
    diff.set_defaults(handler=cmd_diff)

    manifest = sub.add_parser(
        "manifest", parents=[common], help="Entra requiredResourceAccess JSON for a revision (always JSON)"
    )
    manifest.add_argument("--version", help="revision, e.g. v5 (default: latest)")
    manifest.set_defaults(handler=cmd_manifest)

    check = sub.add_parser(
        "check", parents=[common], help="tenant readiness: what the ITDR app really has, and what is missing"
    )
    check.add_argument("tenant", help="tenant id (GUID) or a verified domain, e.g. contoso.onmicrosoft.com")
    check.add_argument("--version", help="catalog revision to check against (default: latest)")
    check.add_argument("--fresh", action="store_true", help="ignore the cached result and ask Microsoft again")
    check.set_defaults(handler=cmd_check)

    fix = sub.add_parser(
        "fix", parents=[common], help="a tenant's fix plan: ordered steps, who, how, Microsoft's wait"
    )
    fix.add_argument("tenant", help="tenant id (GUID) or a verified domain")
    fix.add_argument("--version", help="catalog revision to plan for (default: latest)")
    fix.add_argument("--script", action="store_true", help="print one idempotent PowerShell script (-WhatIf)")
    fix.add_argument("--fresh", action="store_true", help="ignore the cached result and ask Microsoft again")
    fix.set_defaults(handler=cmd_fix)

    audit = sub.add_parser("audit", parents=[common], help="a tenant's consent audit trail, oldest first")
    audit.add_argument("tenant", help="tenant id (GUID) or a domain used in one of its consent requests")
    audit.set_defaults(handler=cmd_audit)

    help_command = sub.add_parser("help", help="the /itdr commands of Slack and the console, as their help lists them")
    help_command.set_defaults(handler=cmd_help)

    start = sub.add_parser(
        "start", help="run the bot (Slack tokens set) or the console (no tokens); what ./run does"
    )
    start.set_defaults(handler=cmd_start)

    doctor = sub.add_parser("doctor", parents=[common], help="check the bot's own setup: settings, Redis, Slack, "
                            "Microsoft, credential expiry, workers (exit 0 ok, 1 warnings, 2 failures)")
    doctor.set_defaults(func=cmd_doctor)

    from bot import cli_fleet, cli_slack

    cli_slack.add_commands(sub)
    cli_fleet.add_commands(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `itdr` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            code = _main(words)
        except UsageError as exc:
            if "--json" in words:
                print(json.dumps({"error": "usage", "message": exc.message}, ensure_ascii=False))
            else:
                print(exc.message, file=sys.stderr)
            code = EXIT_USAGE
        sys.stdout.flush()  # a closed pipe is noticed here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # The reader went away (`itdr manifest | head -1`): stop quietly, as Python's documentation recommends
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe): point stdout at devnull so the
        # interpreter's final flush cannot fail again, and exit 1 like the interpreter does on EPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "func"):  # the Slack entry points load their own settings and catalog
        return int(args.func(args))
    try:
        return args.handler(args, load_catalog())
    except UnknownVersion as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": "unknown_version", "message": str(exc)}))
        else:
            print(f"itdr: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
