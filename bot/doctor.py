"""`itdr doctor [--json]`: the bot's own health, one line per check with what was found and the exact fix.

Settings, Redis (reachable, version, latency, persistence, eviction policy, memory), Slack (the token, its scopes
against app_manifest.yml, the signing secret or app-level token), Microsoft (a token for ITDR_HOME_TENANT, Graph,
the clock against Microsoft's and Slack's `Date`), the checking app's credential expiry, the workers (SAQ's
heartbeats, queue depth, the last and next sweep) and the recent ops events. Exit 0 all pass, 1 warnings, 2 a
failure. No value of a setting is ever printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from bot import ops
from bot.settings import Settings, load_settings, validation_problems
from bot.store import RedisConnections, StateUnavailable
from catalog.words import counted

#: Slack refuses requests whose timestamp is this far off (https://api.slack.com/authentication/verifying-requests-from-slack).
SLACK_SKEW_LIMIT_SECONDS = 300
SKEW_WARN_SECONDS = 60
EXPIRY_WARN_DAYS = 30
#: No worker seen for this long while tenants are watched: nothing is swept.
WORKER_GONE_SECONDS = 300
#: Announcements still waiting this long are late (a delivery takes seconds; a 429 holds a channel a minute or so).
ANNOUNCEMENT_LATE_SECONDS = 15 * 60
#: A sweep that has not finished this long after its start (beyond its spread) is late.
SWEEP_FINISH_MARGIN_SECONDS = 900
_APP_TOKEN_SHAPE = re.compile(r"xapp-\d+-A[A-Z0-9]+-\d+-[0-9a-f]+")
_SIGNING_SECRET_SHAPE = re.compile(r"[0-9a-f]{32}")


class Status(StrEnum):
    ok = "ok"
    warn = "warn"
    fail = "fail"


MARKS = {Status.ok: "✓", Status.warn: "⚠", Status.fail: "✗"}


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {**asdict(self), "status": self.status.value}


def ok(check: str, detail: str) -> Finding:
    return Finding(check, Status.ok, detail)


def warn(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, Status.warn, detail, fix)


def fail(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, Status.fail, detail, fix)


# --- settings -------------------------------------------------------------------------------------


def load(**overrides: Any) -> tuple[Settings | None, list[Finding]]:
    """The settings, or every problem with them (one finding each)."""
    try:
        Settings(**overrides)
    except ValidationError as exc:
        return None, [fail("settings", problem, "correct the variable in the environment or .env")
                      for problem in validation_problems(exc)]
    return load_settings(**overrides), []  # the same values, now registered with the log redactor


def settings_findings(settings: Settings) -> list[Finding]:
    """What each configured mode needs, said per problem."""
    findings: list[Finding] = []
    if settings.slack_bot_token is None:
        findings.append(warn("settings", "SLACK_BOT_TOKEN is not set: only the console (`./run`) can run",
                             "set SLACK_BOT_TOKEN to the app's Bot User OAuth Token (xoxb-…)"))
    else:
        signing, app_token = settings.secret("slack_signing_secret"), settings.secret("slack_app_token")
        if not signing and not app_token:
            findings.append(fail("settings", "neither SLACK_SIGNING_SECRET (`itdr serve`) nor SLACK_APP_TOKEN "
                                 "(`itdr socket`) is set: the bot cannot receive anything from Slack",
                                 "set SLACK_SIGNING_SECRET (Basic Information > App Credentials) for HTTP mode, or "
                                 "SLACK_APP_TOKEN (an app-level token with connections:write) for Socket Mode"))
        if signing and not _SIGNING_SECRET_SHAPE.fullmatch(signing):
            findings.append(warn("slack signing secret", "SLACK_SIGNING_SECRET is not 32 hexadecimal characters, "
                                 "as Slack's are: requests from Slack would fail their signature check",
                                 "copy the Signing Secret from Basic Information > App Credentials"))
        elif signing:
            findings.append(ok("slack signing secret", "SLACK_SIGNING_SECRET is set (HTTP mode)"))
        if app_token and not _APP_TOKEN_SHAPE.fullmatch(app_token):
            findings.append(fail("slack app token", "SLACK_APP_TOKEN does not look like an app-level token "
                                 "(xapp-1-A…-…-…)", "generate an app-level token with connections:write under "
                                 "Basic Information > App-Level Tokens and set SLACK_APP_TOKEN to it"))
        elif app_token:
            findings.append(ok("slack app token", "SLACK_APP_TOKEN has the app-level token's shape (Socket Mode)"))
    if settings.readiness_configured:
        if settings.redis_url is None:
            findings.append(fail("settings", "REDIS_URL is not set: `itdr worker` cannot run (it shares its queue "
                                 "and state with the bot) and state dies with the process",
                                 "set REDIS_URL to a Redis with persistence, e.g. redis://redis:6379/0"))
        if settings.itdr_home_tenant is None:
            findings.append(warn("settings", "ITDR_HOME_TENANT is not set: the checking app's own credentials "
                                 "cannot be checked", "set ITDR_HOME_TENANT to the tenant id or verified domain "
                                 "where the ITDR app is registered"))
    else:
        findings.append(warn("settings", "the readiness check is not configured (ITDR_CLIENT_ID is not set)",
                             "set ITDR_CLIENT_ID, ITDR_CLIENT_SECRET or ITDR_CLIENT_CERTIFICATE, ITDR_TARGET_APP_ID "
                             "and ITDR_HOME_TENANT (README, 'Tenant readiness check')"))
    if not any(f.check == "settings" for f in findings):
        findings.insert(0, ok("settings", "every variable the configured modes need is set and well formed"))
    return findings


# --- Redis -----------------------------------------------------------------------------------------


async def redis_findings(redis: RedisConnections) -> list[Finding]:
    client = redis.state.client
    try:
        # The fastest of five: the distance to Redis, not a pause of this process (a busy machine's scheduler or a
        # garbage collection made a 3-ping average read 52 ms from a local socket).
        rtts = []
        for _ in range(5):
            start = time.perf_counter()
            await client.ping()
            rtts.append(time.perf_counter() - start)
        rtt_ms = min(rtts) * 1000
        server = await client.info("server")
        memory = await client.info("memory")
    except (RedisError, OSError) as exc:
        return [fail("redis", f"Redis does not answer ({type(exc).__name__})",
                     "start Redis or correct REDIS_URL (host, port, password, TLS with rediss://)")]
    findings = [ok("redis", f"Redis {server.get('redis_version', '?')} answers in {rtt_ms:.1f} ms")]
    if rtt_ms > 50:
        findings[0] = warn("redis", f"Redis {server.get('redis_version', '?')} answers in {rtt_ms:.0f} ms",
                           "run Redis near the bot (same region or network); every request waits on it")
    persistence = await redis.state.persistence()
    if persistence is None:
        findings.append(warn("redis persistence", "Redis would not say whether it keeps data on disk (CONFIG is "
                             "disabled)", "make sure AOF (appendonly yes) or RDB snapshots are on at your provider"))
    elif not any(persistence):
        findings.append(warn("redis persistence", "Redis keeps nothing on disk (neither AOF nor RDB): approvals, "
                             "the audit trail and watched tenants are lost when it restarts",
                             "set `appendonly yes` (or a `save` schedule) in redis.conf, or turn on persistence "
                             "at your provider"))
    else:
        kinds = " and ".join(name for name, on in zip(("AOF", "RDB snapshots"), persistence, strict=True) if on)
        findings.append(ok("redis persistence", f"Redis keeps its data on disk ({kinds})"))
    policy = str(memory.get("maxmemory_policy") or "")
    with contextlib.suppress(RedisError, OSError):  # managed Redis may refuse CONFIG: INFO memory says it too
        policy = str((await client.config_get("maxmemory-policy")).get("maxmemory-policy") or policy)
    if policy and policy != "noeviction":
        findings.append(fail("redis eviction", f"maxmemory-policy is {policy}: under memory pressure Redis deletes "
                             "the bot's state (approvals, audit, watched tenants)",
                             "set `maxmemory-policy noeviction` in redis.conf (or your provider's parameter group)"))
    else:
        findings.append(ok("redis eviction", "maxmemory-policy is noeviction"))
    used, limit = int(memory.get("used_memory") or 0), int(memory.get("maxmemory") or 0)
    used_text = f"{used / 2**20:.1f} MiB used"
    if not limit:
        findings.append(ok("redis memory", f"{used_text}, no maxmemory limit"))
    elif used >= 0.9 * limit:
        findings.append(fail("redis memory", f"{used_text} of {limit / 2**20:.0f} MiB ({used / limit:.0%}): writes "
                             "will be refused soon", "raise maxmemory or give Redis more memory"))
    elif used >= 0.75 * limit:
        findings.append(warn("redis memory", f"{used_text} of {limit / 2**20:.0f} MiB ({used / limit:.0%})",
                             "raise maxmemory before it fills"))
    else:
        findings.append(ok("redis memory", f"{used_text} of {limit / 2**20:.0f} MiB ({used / limit:.0%})"))
    return findings


# --- Slack -------------------------------------------------------------------------------------------


def slack_findings(probe: ops.SlackProbe) -> list[Finding]:
    if not probe.ok:
        if probe.error in ("invalid_auth", "token_revoked", "account_inactive", "not_authed"):
            return [fail("slack token", f"Slack refused SLACK_BOT_TOKEN ({probe.error})", ops.SLACK_TOKEN_FIX)]
        return [fail("slack token", f"auth.test failed: {probe.error}",
                     "check SLACK_API_URL and the network path to Slack (proxy, firewall)")]
    findings = [ok("slack token", f"auth.test accepts the bot token (workspace {probe.team})")]
    wanted = ops.manifest_scopes()
    if probe.scopes is None:
        findings.append(warn("slack scopes", "Slack did not return the token's scopes (no x-oauth-scopes header)",
                             "compare the app's OAuth & Permissions page with app_manifest.yml by hand"))
    elif wanted is None:
        findings.append(warn("slack scopes", "app_manifest.yml was not found beside the code",
                             "run `itdr doctor` from the project checkout"))
    elif missing := sorted(wanted - probe.scopes):
        findings.append(fail("slack scopes", f"the bot token lacks {', '.join(missing)} (app_manifest.yml asks "
                             "for them)", "add them under OAuth & Permissions > Bot Token Scopes (or update the app "
                             "from app_manifest.yml), reinstall the app and set the new SLACK_BOT_TOKEN"))
    else:
        findings.append(ok("slack scopes", f"the bot token has every scope app_manifest.yml asks for "
                           f"({', '.join(sorted(wanted))})"))
    return findings


# --- Microsoft and the checking app's credential ----------------------------------------------------------


def _expiry(check: str, what: str, end: dt.datetime, now: dt.datetime, fix: str) -> Finding:
    left = ops.days_left(end, now)
    when = end.strftime("%Y-%m-%d %H:%M UTC")
    if left <= 0:
        return fail(check, f"the {what} expired on {when}: every check fails with AADSTS7000222", fix)
    if left < EXPIRY_WARN_DAYS:
        return warn(check, f"the {what} expires on {when}, in {counted(round(left), 'day')}", fix)
    return ok(check, f"the {what} expires on {when}, in {counted(round(left), 'day')}")


def microsoft_findings(settings: Settings, probe: ops.HomeProbe | None, now: dt.datetime) -> list[Finding]:
    findings: list[Finding] = []
    certificate = settings.itdr_client_certificate
    if certificate is not None:
        try:
            findings.append(_expiry("credential", "client certificate", ops.certificate_expiry(certificate), now,
                                    ops.CERTIFICATE_FIX))
        except (OSError, ValueError):
            findings.append(fail("credential", "ITDR_CLIENT_CERTIFICATE holds no readable PEM certificate",
                                 "point ITDR_CLIENT_CERTIFICATE at one PEM file with the private key and certificate"))
    if probe is None:
        return findings
    home = settings.itdr_home_tenant
    if probe.token_error is not None:
        error = probe.token_error
        fix = (ops.SECRET_FIX if error.aadsts in ops.REJECTED_SECRET_CODES and certificate is None
               else ops.CERTIFICATE_FIX if error.aadsts in (700027, 1000502) else
               "check ITDR_HOME_TENANT (the tenant where the ITDR app is registered) and ITDR_CLIENT_ID")
        findings.insert(0, fail("microsoft token", f"no token for the home tenant {home}: {error}", fix))
        return findings
    if probe.login_error is not None:
        findings.insert(0, fail("microsoft token", f"no token for the home tenant {home}: {probe.login_error}",
                                "check ITDR_AUTHORITY_HOST and the network path to it (proxy, firewall)"))
        return findings
    if probe.error is not None:
        findings.insert(0, ok("microsoft token", f"Entra issues a token for the home tenant {home}"))
        findings.insert(1, fail("graph", probe.error, "check ITDR_GRAPH_URL and the network path (proxy, firewall)"))
        return findings
    findings[:0] = [ok("microsoft token", f"Entra issues a token for the home tenant {home}"),
                    ok("graph", "Graph answers")]
    if certificate is not None:
        return findings  # the PEM says when it ends
    if probe.not_granted:
        findings.append(warn("credential", f"cannot read the client secret's end date: Application.Read.All is not "
                             f"granted to the ITDR app in {home} (Graph: 403 Authorization_RequestDenied)",
                             ops.APPLICATION_READ_FIX))
    elif not probe.found:
        findings.append(warn("credential", f"no app registration with ITDR_CLIENT_ID was found in {home}",
                             "set ITDR_HOME_TENANT to the tenant where the ITDR app is registered"))
    elif (end := ops.secret_end(settings, probe)) is None:
        findings.append(warn("credential", "the app registration lists no client secret with an end date",
                             ops.SECRET_FIX))
    else:
        findings.append(_expiry("credential", "client secret", end, now, ops.SECRET_FIX))
    return findings


def clock_finding(skews: dict[str, float]) -> Finding | None:
    if not skews:
        return None
    source, skew = max(skews.items(), key=lambda item: abs(item[1]))
    said = ", ".join(f"{name} {value:+.0f} s" for name, value in skews.items())
    if abs(skew) > SLACK_SKEW_LIMIT_SECONDS:
        return fail("clock", f"this machine's clock is {abs(skew):.0f} s off {source}'s ({said}): Slack refuses "
                    "requests more than 5 minutes off, so every slash command fails",
                    "synchronise the clock (chrony or systemd-timesyncd with NTP)")
    if abs(skew) > SKEW_WARN_SECONDS:
        return warn("clock", f"this machine's clock is {abs(skew):.0f} s off {source}'s ({said}); Slack refuses "
                    "requests more than 5 minutes off", "synchronise the clock (chrony or systemd-timesyncd with NTP)")
    return ok("clock", f"within {SKEW_WARN_SECONDS} s of Slack's and Microsoft's ({said})")


# --- workers -------------------------------------------------------------------------------------------


async def worker_findings(settings: Settings, redis: RedisConnections, now: dt.datetime) -> list[Finding]:
    from croniter import croniter

    from bot.drift.store import DriftStore
    from bot.drift.sweep import queue_for

    store = ops.OpsStore(redis.state)
    queue = queue_for(redis, settings)
    try:
        info = await queue.info()
        drift_store = DriftStore(redis.state)
        watched = len(await drift_store.tenant_ids())
        waiting, waiting_since = await drift_store.outbox_backlog()
        last_seen = await store.worker_last_seen()
        started, finished = await store.sweep_times()
        events = await store.recent_events(now - dt.timedelta(days=7))
    except (RedisError, OSError, StateUnavailable):
        return []  # the Redis check already says it does not answer
    finally:
        await queue.disconnect()
    findings: list[Finding] = []
    live = len(info.get("workers") or {})
    start_worker = "start `itdr worker` (README, 'Drift notifications and fleet sweeps'); run two or more for failover"
    if live:
        findings.append(ok("workers", f"{live} `itdr worker` process{'es' if live > 1 else ''} alive"))
    else:
        gone = (now - last_seen).total_seconds() if last_seen else None
        seen = f"last seen {gone / 60:.0f} min ago" if gone is not None else "none ever seen"
        if watched and (gone is None or gone > WORKER_GONE_SECONDS):
            are = "is" if watched == 1 else "are"
            findings.append(fail("workers", f"no `itdr worker` is running ({seen}) while "
                                 f"{counted(watched, 'tenant')} {are} watched: nothing is swept, announced or verified",
                                 start_worker))
        else:
            findings.append(warn("workers", f"no `itdr worker` is running ({seen})", start_worker))
    depth = int(info.get("queued") or 0)
    findings.append(ok("queue", f"{counted(depth, 'job')} queued, {info.get('active', 0)} running, "
                    f"{info.get('scheduled', 0)} scheduled"))
    cron = croniter(settings.itdr_sweep_cron, now)
    next_sweep = cron.get_next(dt.datetime)
    due = croniter(settings.itdr_sweep_cron, now).get_prev(dt.datetime)
    when = "%Y-%m-%d %H:%M UTC"
    last = (f"last sweep started {started.strftime(when)}" if started else "no sweep recorded yet") + (
        f", finished {finished.strftime(when)}" if started and finished and finished >= started else
        ", not finished" if started else "")
    detail = f"{last}; next {next_sweep.strftime(when)} ({settings.itdr_sweep_cron})"
    finish_by = settings.itdr_sweep_spread_seconds + SWEEP_FINISH_MARGIN_SECONDS
    if watched and started is not None and (finished is None or finished < started) and (
            now - started).total_seconds() > finish_by:
        findings.append(warn("sweep", f"{detail}: the last sweep did not finish on time",
                             "look at the workers' logs (`itdr worker`) for failing check_tenant jobs"))
    elif watched and (started is None or started < due - dt.timedelta(minutes=10)) and (
            now - due).total_seconds() > 600 and last_seen is not None:
        findings.append(warn("sweep", f"{detail}: the sweep due {due.strftime(when)} did not start",
                             "make sure an `itdr worker` runs and ITDR_SWEEP_CRON is what you mean"))
    else:
        findings.append(ok("sweep", detail))
    if waiting and waiting_since is not None and (now - waiting_since).total_seconds() > ANNOUNCEMENT_LATE_SECONDS:
        findings.append(warn("announcements", f"{waiting} channel{'s' if waiting > 1 else ''} with drift or revision "
                             f"announcements waiting, the oldest since {waiting_since.strftime(when)}",
                             "make sure an `itdr worker` runs; its log says why a channel's delivery fails"))
    else:
        findings.append(ok("announcements", f"{waiting} channel{'' if waiting == 1 else 's'} with announcements "
                           "waiting" if waiting else "none waiting"))
    if events:
        said = "; ".join(f"{event.at.strftime(when)} {event.text}" for event in events[:3])
        findings.append(warn("ops events", f"{len(events)} in the last 7 days: {said}",
                             "act on each (the ops channel, or the worker's WARNING lines, has the fix)"))
    return findings


# --- running it ---------------------------------------------------------------------------------------


async def run_checks(settings: Settings, *, now: dt.datetime | None = None) -> list[Finding]:
    now = now or dt.datetime.now(dt.UTC)
    findings = settings_findings(settings)
    slack_probe: Awaitable[ops.SlackProbe | None] = (
        ops.probe_slack(settings) if settings.slack_bot_token is not None else asyncio.sleep(0, None))
    home_probe: Awaitable[ops.HomeProbe | None] = (
        ops.probe_home_tenant(settings) if settings.readiness_configured and settings.itdr_home_tenant
        else asyncio.sleep(0, None))
    redis = RedisConnections(settings.redis_dsn, settings.redis_prefix) if settings.redis_dsn else None
    try:
        redis_checks: Awaitable[list[Finding]] = redis_findings(redis) if redis else asyncio.sleep(0, [
            warn("redis", "REDIS_URL is not set: an embedded Redis is used, so state dies with the process",
                 "set REDIS_URL to a Redis with persistence and maxmemory-policy noeviction")])
        slack, home, redis_found = await asyncio.gather(slack_probe, home_probe, redis_checks)
        findings += redis_found
        if redis is not None and redis_found[0].status is not Status.fail:
            findings += await worker_findings(settings, redis, now)
    finally:
        if redis is not None:
            await redis.aclose()
    if slack is not None:
        findings += slack_findings(slack)
    findings += microsoft_findings(settings, home, now)
    skews = {name: probe.skew for name, probe in (("Slack", slack), ("Microsoft", home))
             if probe is not None and probe.skew is not None}
    if (clock := clock_finding(skews)) is not None:
        findings.append(clock)
    return findings


def exit_code(findings: list[Finding]) -> int:
    statuses = {finding.status for finding in findings}
    return 2 if Status.fail in statuses else 1 if Status.warn in statuses else 0


def render(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        line = f"{MARKS[finding.status]} {finding.check}: {finding.detail}"
        if finding.fix and finding.status is not Status.ok:
            line += f"\n    fix: {finding.fix}"
        lines.append(line)
    return "\n".join(lines)


def doctor(*, as_json: bool, **overrides: Any) -> int:
    """`itdr doctor`: print the findings; the exit status."""
    settings, findings = load(**overrides)
    if settings is not None:
        findings = asyncio.run(run_checks(settings))
    if as_json:
        json.dump([finding.to_json() for finding in findings], sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(render(findings))
    return exit_code(findings)
