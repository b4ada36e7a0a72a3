"""Running it for a year: probes of the bot's own credentials and services, and what workers record for operators.

Shared by `itdr doctor` (bot.doctor) and the worker's ops monitor (bot.ops_monitor):
- `probe_slack`: `auth.test`, with the granted scopes Slack returns in the `x-oauth-scopes` header and its `Date`;
- `probe_home_tenant`: a token for ITDR_HOME_TENANT and the checking app's registration read from Graph there
  (`passwordCredentials` / `keyCredentials` end dates; needs Application.Read.All);
- `certificate_expiry`: the `notAfter` of ITDR_CLIENT_CERTIFICATE;
- `OpsStore`: worker heartbeats, sweep start/end times, one-time notice claims and the recent ops events
  (all keys bounded by TTL or length).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from bot.microsoft.errors import MicrosoftError, TokenError
from bot.microsoft.graph import odata_string
from bot.microsoft.http import ssl_context
from bot.settings import Settings
from bot.store import State

#: Days before expiry at which operators are told, then "expired" (0).
EXPIRY_THRESHOLDS = (30, 14, 7, 1, 0)
#: AADSTS codes meaning the checking app's own secret is wrong or expired (microsoft-apis.md, AADSTS table).
REJECTED_SECRET_CODES = (7000215, 7000222)
APPLICATION_READ_FIX = (
    "grant Application.Read.All in the home tenant: Entra admin center > App registrations > the ITDR app > API "
    "permissions > Add a permission > Microsoft Graph > Application permissions > Application.Read.All, then "
    "'Grant admin consent'")
SECRET_FIX = ("create a new client secret (Entra admin center > App registrations > the ITDR app > Certificates & "
              "secrets > New client secret), set ITDR_CLIENT_SECRET to it and restart the bot and workers")
CERTIFICATE_FIX = ("upload a new certificate to the ITDR app (App registrations > Certificates & secrets), point "
                   "ITDR_CLIENT_CERTIFICATE at its PEM (key + certificate) and restart the bot and workers")
SLACK_TOKEN_FIX = ("reinstall the Slack app (api.slack.com/apps > your app > Install App) and set SLACK_BOT_TOKEN to "
                   "the new Bot User OAuth Token")


def parse_http_date(value: str | None) -> dt.datetime | None:
    """An HTTP `Date` header as an aware datetime (None when absent or malformed)."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def skew_seconds(date_header: str | None, sent: float, received: float) -> float | None:
    """How far the server's clock is ahead of ours (seconds; negative: behind), from its `Date` header, taking the
    request's midpoint as the moment it was stamped."""
    server = parse_http_date(date_header)
    return None if server is None else server.timestamp() - (sent + received) / 2


# --- what checks in this process saw ------------------------------------------------------------------

_rejected_secret: list[tuple[int | None, str]] = []  # the last refusal of our own secret a check met, if any


def note_rejected_secret(aadsts: int | None, message: str) -> None:
    """A readiness check was refused a token because of our own secret (AADSTS7000215/7000222): the worker's ops
    monitor tells operators (once a day across workers), even without ITDR_HOME_TENANT."""
    _rejected_secret[:] = [(aadsts, message)]


def take_rejected_secret() -> tuple[int | None, str] | None:
    return _rejected_secret.pop() if _rejected_secret else None


# --- Slack ---------------------------------------------------------------------------------------


@dataclass
class SlackProbe:
    ok: bool
    error: str | None = None  # Slack's error code, or a transport failure
    team: str | None = None
    scopes: frozenset[str] | None = None  # None: the header was absent
    skew: float | None = None


async def probe_slack(settings: Settings, *, client: httpx.AsyncClient | None = None) -> SlackProbe:
    """`auth.test` with the bot token: whether Slack accepts it, its granted scopes and Slack's clock."""
    token = settings.secret("slack_bot_token")
    own = client is None
    http = client or httpx.AsyncClient(timeout=10)
    try:
        sent = time.time()
        response = await http.post(settings.slack_api_url + "auth.test", headers={"Authorization": f"Bearer {token}"})
        received = time.time()
    except httpx.HTTPError as exc:
        return SlackProbe(ok=False, error=f"unreachable ({type(exc).__name__})")
    finally:
        if own:
            await http.aclose()
    skew = skew_seconds(response.headers.get("date"), sent, received)
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        return SlackProbe(ok=False, error=f"HTTP {response.status_code}", skew=skew)
    header = response.headers.get("x-oauth-scopes")
    scopes = frozenset(s.strip() for s in header.split(",") if s.strip()) if header is not None else None
    if not body.get("ok"):
        return SlackProbe(ok=False, error=str(body.get("error") or f"HTTP {response.status_code}"), skew=skew)
    return SlackProbe(ok=True, team=str(body.get("team") or ""), scopes=scopes, skew=skew)


def manifest_scopes(path: Path | None = None) -> frozenset[str] | None:
    """The bot scopes app_manifest.yml asks for; None when the manifest is not beside the code."""
    import yaml

    path = path or Path(__file__).resolve().parents[1] / "app_manifest.yml"
    try:
        manifest = yaml.safe_load(path.read_text())
        return frozenset(manifest["oauth_config"]["scopes"]["bot"])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None


# --- Microsoft, home tenant ------------------------------------------------------------------------


@dataclass
class HomeProbe:
    token_error: TokenError | None = None
    login_error: str | None = None  # the login host unreachable, or our configuration refused by msal
    error: str | None = None  # Graph unreachable or an unexpected answer
    not_granted: bool = False  # 403 Authorization_RequestDenied: Application.Read.All missing
    found: bool = False  # the app registration was listed
    secret_ends: list[tuple[str | None, dt.datetime]] = field(default_factory=list)  # (hint, endDateTime)
    certificate_ends: list[dt.datetime] = field(default_factory=list)
    skew: float | None = None  # Microsoft's clock against ours


def _end(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


async def probe_home_tenant(settings: Settings) -> HomeProbe:
    """A Graph token for ITDR_HOME_TENANT, then the checking app's registration there (`GET /applications?$filter=
    appId eq '…'`, https://learn.microsoft.com/en-us/graph/api/application-list) with its credentials' end dates."""
    from bot.microsoft.tokens import Resource, TokenProvider

    assert settings.itdr_home_tenant and settings.itdr_client_id
    probe = HomeProbe()
    tokens = TokenProvider(settings)
    try:
        token = await tokens.get_token(settings.itdr_home_tenant, Resource.GRAPH)
    except TokenError as exc:
        probe.token_error = exc
        return probe
    except MicrosoftError as exc:
        probe.login_error = str(exc)
        return probe
    finally:
        tokens.close()
    params = {"$filter": f"appId eq {odata_string(settings.itdr_client_id)}",
              "$select": "id,appId,displayName,passwordCredentials,keyCredentials"}
    async with httpx.AsyncClient(verify=ssl_context(), timeout=settings.itdr_http_timeout_seconds) as http:
        try:
            sent = time.time()
            response = await http.get(f"{settings.graph_url}/v1.0/applications", params=params,
                                      headers={"Authorization": f"Bearer {token}"})
            received = time.time()
        except httpx.HTTPError as exc:
            probe.error = f"Graph is unreachable ({type(exc).__name__})"
            return probe
    probe.skew = skew_seconds(response.headers.get("date"), sent, received)
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 403:
        probe.not_granted = True
        return probe
    if response.status_code != 200:
        code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
        probe.error = f"Graph answered HTTP {response.status_code}" + (f" ({code})" if code else "")
        return probe
    apps = body.get("value") or []
    if not apps:
        return probe
    probe.found = True
    app = apps[0]
    for credential in app.get("passwordCredentials") or []:
        if (end := _end(credential.get("endDateTime"))) is not None:
            probe.secret_ends.append((credential.get("hint"), end))
    for credential in app.get("keyCredentials") or []:
        if (end := _end(credential.get("endDateTime"))) is not None:
            probe.certificate_ends.append(end)
    return probe


def secret_end(settings: Settings, probe: HomeProbe) -> dt.datetime | None:
    """The end date of the secret in use: the credential whose hint (its first 3 characters, as Graph keeps them)
    matches ITDR_CLIENT_SECRET; without a match, the latest one."""
    if not probe.secret_ends:
        return None
    secret = settings.itdr_client_secret.get_secret_value() if settings.itdr_client_secret else ""
    matching = [end for hint, end in probe.secret_ends if hint and secret.startswith(hint)]
    return max(matching or [end for _, end in probe.secret_ends])


def certificate_expiry(path: Path) -> dt.datetime:
    """The `notAfter` of the (first) certificate in a PEM file. Raises ValueError when there is none."""
    data = path.read_bytes()
    start = data.find(b"-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise ValueError("no certificate in the file")
    return x509.load_pem_x509_certificate(data[start:]).not_valid_after_utc


def days_left(end: dt.datetime, now: dt.datetime) -> float:
    return (end - now).total_seconds() / 86400


def threshold_crossed(end: dt.datetime, now: dt.datetime) -> int | None:
    """The tightest expiry threshold (30, 14, 7, 1 days; 0 = expired) already reached, or None."""
    left = days_left(end, now)
    crossed = [threshold for threshold in EXPIRY_THRESHOLDS if left <= threshold]
    return min(crossed) if crossed else None


# --- what workers record ----------------------------------------------------------------------------

HEARTBEAT_TTL_SECONDS = 7 * 24 * 3600
SWEEP_TIMES_TTL_SECONDS = 30 * 24 * 3600
EVENTS_KEPT = 50


def _stamp(raw: Any) -> dt.datetime | None:
    if raw is None:
        return None
    try:
        return dt.datetime.fromtimestamp(float(raw), dt.UTC)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class OpsEvent:
    at: dt.datetime
    kind: str
    text: str


class OpsStore:
    """Operators' records under `{prefix}ops:`; state (fails closed): a notice claim that cannot be made is not
    posted, and retried at the next check."""

    def __init__(self, state: State) -> None:
        self.state = state

    def key(self, *parts: str) -> str:
        return self.state.key("ops", *parts)

    async def heartbeat(self, now: dt.datetime) -> None:
        async with self.state.guard("record the worker's heartbeat") as redis:
            await redis.set(self.key("worker-seen"), str(now.timestamp()), ex=HEARTBEAT_TTL_SECONDS)

    async def worker_last_seen(self) -> dt.datetime | None:
        async with self.state.guard("read the workers' heartbeat") as redis:
            return _stamp(await redis.get(self.key("worker-seen")))

    async def sweep_event(self, what: str, now: dt.datetime) -> None:
        """`what`: "started" (the sweep job ran) or "finished" (its announcements were made)."""
        async with self.state.guard("record the sweep's progress") as redis:
            await redis.set(self.key("sweep", what), str(now.timestamp()), ex=SWEEP_TIMES_TTL_SECONDS)

    async def sweep_times(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        async with self.state.guard("read the sweep's progress") as redis:
            started, finished = await redis.mget([self.key("sweep", "started"), self.key("sweep", "finished")])
        return _stamp(started), _stamp(finished)

    async def claim_notice(self, notice: str, ttl: int) -> bool:
        """SET NX: True for the one caller (of every worker, across restarts) that should tell this notice."""
        async with self.state.guard("record the ops notice") as redis:
            return bool(await redis.set(self.key("notice", notice), b"1", nx=True, ex=max(ttl, 60)))

    async def release_notice(self, notice: str) -> None:
        async with self.state.guard("release the ops notice") as redis:
            await redis.delete(self.key("notice", notice))

    async def record_event(self, event: OpsEvent) -> None:
        record = json.dumps({"at": event.at.timestamp(), "kind": event.kind, "text": event.text})
        async with self.state.guard("record the ops event") as redis, redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key("events"), record)
            pipe.ltrim(self.key("events"), 0, EVENTS_KEPT - 1)
            pipe.expire(self.key("events"), SWEEP_TIMES_TTL_SECONDS)
            await pipe.execute()

    async def recent_events(self, since: dt.datetime) -> list[OpsEvent]:
        async with self.state.guard("read the ops events") as redis:
            raws = await redis.lrange(self.key("events"), 0, EVENTS_KEPT - 1)
        events = []
        for raw in raws:
            try:
                data = json.loads(raw)
                at = _stamp(data["at"])
            except (ValueError, KeyError, TypeError):
                continue
            if at is not None and at >= since:
                events.append(OpsEvent(at, str(data.get("kind")), str(data.get("text"))))
        return events
