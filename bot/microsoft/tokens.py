"""App-only tokens from Entra ID via msal, one ConfidentialClientApplication per tenant (a bounded few at once).

msal is synchronous, so every call that may touch the network runs in a worker thread; a token still valid is
answered from a map on the event loop without one (a thread hop costs more than the lookup, and a check
needs several tokens; figures in README's benchmarks).
One tenant+resource never has two token requests in flight.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from enum import StrEnum
from pathlib import Path
from typing import Any

import msal
import requests
import requests.adapters
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from bot import metrics
from bot.logging import redact, register_secrets
from bot.microsoft.errors import (
    AppNotInTenant,
    BadClientSecret,
    ConfigurationError,
    ConsentRequired,
    MissingServicePrincipal,
    TenantNotFound,
    TokenError,
    TransportError,
)
from bot.microsoft.http import ca_bundle_path, record_round_trip, record_token_request
from bot.microsoft.tenant import TenantRef, is_guid, parse_tenant
from bot.settings import Settings

log = logging.getLogger(__name__)

class Resource(StrEnum):
    GRAPH = "graph"
    EXCHANGE = "exchange"


def scope_for(settings: Settings, resource: Resource | str) -> str:
    """App-only scope for a resource, derived from the configured URL (so national clouds work)."""
    base = {
        Resource.GRAPH: settings.graph_url,
        Resource.EXCHANGE: settings.exchange_url,
    }[Resource(resource)]
    return f"{base}/.default"


# AADSTS code -> (exception class, friendly message). {tenant} is a validated TenantRef value.
_AADSTS: dict[int, tuple[type[TokenError], str]] = {
    90002: (
        TenantNotFound,
        "Microsoft doesn't know the tenant `{tenant}`. Check the tenant ID or domain for typos.",
    ),
    700016: (
        AppNotInTenant,
        "The app isn't installed in tenant `{tenant}`: an administrator of that tenant must grant admin "
        "consent first (or this is the wrong tenant).",
    ),
    7000229: (
        MissingServicePrincipal,
        "The app has no service principal in tenant `{tenant}`: an administrator must grant admin consent again.",
    ),
    65001: (ConsentRequired, "Admin consent has not been granted in tenant `{tenant}`."),
    7000215: (
        BadClientSecret,
        "Our client secret was rejected. This is a problem with the bot's configuration, not the customer's.",
    ),
    7000222: (
        BadClientSecret,
        "Our client secret has expired. This is a problem with the bot's configuration, not the customer's.",
    ),
}
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
_AADSTS_IN_TEXT = re.compile(r"AADSTS(\d{5,8})")
_PEM_KEY = re.compile(rb"-----BEGIN (?:[A-Z ]+ )?PRIVATE KEY-----.+?-----END (?:[A-Z ]+ )?PRIVATE KEY-----", re.S)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def load_certificate_credential(path: Path) -> dict[str, str]:
    """msal credential from one PEM file holding the private key and the certificate.

    The SHA-1 thumbprint (sent as x5t) is computed from the certificate, so operators only
    configure the file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the client certificate file {path.name}: {exc.strerror}") from exc
    key_match, cert_match = _PEM_KEY.search(data), _PEM_CERT.search(data)
    if not key_match or not cert_match:
        raise ConfigurationError(
            f"The client certificate file {path.name} must contain both a PEM private key and a PEM certificate."
        )
    try:
        key = serialization.load_pem_private_key(key_match.group(0), password=None)
        cert = x509.load_pem_x509_certificate(cert_match.group(0))
    except (ValueError, TypeError):
        # Not chained: the underlying message could quote key material.
        raise ConfigurationError(
            f"The client certificate file {path.name} could not be parsed (encrypted keys are not supported)."
        ) from None
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ConfigurationError(f"The private key in {path.name} does not belong to its certificate.")
    remaining = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    if remaining < dt.timedelta(days=30):
        log.warning("client certificate %s expires in %d days", path.name, remaining.days)
    return {
        "private_key": key_match.group(0).decode("ascii"),
        "thumbprint": cert.fingerprint(hashes.SHA1()).hex().upper(),  # x5t is SHA-1 by definition (RFC 7515)
    }


#: Keep-alive connections to the login host kept by the session every msal app shares.
LOGIN_POOL_SIZE = 64


def _shared_session(timeout: float) -> requests.Session:
    """One requests.Session for every tenant's msal app, so login connections are pooled."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=LOGIN_POOL_SIZE, max_retries=1)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # Passing verify per request stops requests from preferring REQUESTS_CA_BUNDLE over
    # SSL_CERT_FILE, so msal and httpx trust exactly the same CAs. Proxies still come from the
    # environment because trust_env stays on.
    send = functools.partial(session.request, timeout=timeout, verify=ca_bundle_path() or True)

    def counted(*args: Any, **kwargs: Any) -> requests.Response:
        # Every login round trip counts (OIDC discovery as well as token requests); msal runs this in a worker
        # thread that inherits the caller's context, so the caller's round-trip scope sees it.
        record_round_trip("login")
        response = send(*args, **kwargs)
        metrics.MICROSOFT_REQUESTS.labels(api="login", status=metrics.status_label(response.status_code)).inc()
        return response

    session.request = counted  # type: ignore[method-assign]
    return session


class _Discovered:
    """A response msal accepts (oauth2cli/http.py) for a discovery document we already have."""

    status_code = 200

    def __init__(self, text: str) -> None:
        self.text = text
        self.headers: dict[str, str] = {}

    def raise_for_status(self) -> None:
        return None


class LoginHttp:
    """msal's http_client for every tenant: OIDC discovery answered from one process-wide cache (a day, 50,000
    tenants), everything else through the shared Session.

    An msal app costs a discovery GET to build; with its document cached here, an app evicted from the small app
    cache is rebuilt with no network at all. msal's own `http_cache` cannot be shared across apps (its index lives
    inside the dict, capped at 1,024 entries, and breaks under threads), so each app keeps its own for msal's
    throttling of errors.
    """

    _DISCOVERY = re.compile(r"https?://[^/]+/([^/]+)/v2\.0/\.well-known/openid-configuration")
    _FIELDS = ("issuer", "authorization_endpoint", "token_endpoint", "device_authorization_endpoint")

    def __init__(self, session: requests.Session, *, ttl: float = 86400, max_entries: int = 50_000) -> None:
        self._session = session
        self._ttl = ttl
        self._max = max_entries
        self._documents: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()  # msal calls this from worker threads

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        if params is None and self._DISCOVERY.fullmatch(url):
            with self._lock:
                cached = self._documents.get(url)
            if cached is not None and time.time() - cached[1] < self._ttl:
                return _Discovered(cached[0])
            response = self._session.get(url, headers=headers, **kwargs)
            if response.status_code == 200:
                document = response.json()
                kept = json.dumps({key: document[key] for key in self._FIELDS if key in document})
                with self._lock:
                    self._documents[url] = (kept, time.time())
                    self._documents.move_to_end(url)
                    while len(self._documents) > self._max:
                        self._documents.popitem(last=False)
            return response
        return self._session.get(url, params=params, headers=headers, **kwargs)

    def post(self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        return self._session.post(url, params=params, data=data, headers=headers, **kwargs)

    def close(self) -> None:
        self._session.close()


#: msal treats an access token with less than 5 minutes left as expired; so does the token map.
EXPIRY_MARGIN_SECONDS = 300
MAX_TOKENS = 40_000  # (tenant, resource) pairs kept in the token map: 20,000 tenants with two resources


class TokenProvider:
    """App-only tokens for (tenant, resource).

    Three layers, so thousands of tenants stay cheap:
    - a token map on the event loop, (tenant, scope) → (token, use until): a warm check never leaves the loop;
    - a small LRU of msal apps (one per tenant, as msal needs an authority per tenant), each with its own token
      cache, dropped with it;
    - OIDC discovery documents in `LoginHttp`, so rebuilding an evicted app needs no network.
    A tenant costs at most one discovery a day and one token request per resource per token lifetime.
    """

    def __init__(self, settings: Settings, *, max_apps: int = 512) -> None:
        if not settings.itdr_client_id:
            raise ConfigurationError("ITDR_CLIENT_ID is not set.")
        if not settings.itdr_client_secret and not settings.itdr_client_certificate:
            raise ConfigurationError("Set ITDR_CLIENT_SECRET or ITDR_CLIENT_CERTIFICATE.")
        self._settings = settings
        self._client_id = settings.itdr_client_id
        self._max_apps = max_apps
        self._apps: OrderedDict[str, msal.ConfidentialClientApplication] = OrderedDict()
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._guids: OrderedDict[str, str] = OrderedDict()  # domain → tenant GUID, from discovery
        # Weak values: a lock lives only while someone waits on it, so the map cannot grow forever.
        self._locks: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = weakref.WeakValueDictionary()
        self._credential: str | dict[str, str] | None = None
        self._secret = settings.itdr_client_secret.get_secret_value() if settings.itdr_client_secret else None
        register_secrets([self._secret])  # msal's errors can quote what it sent
        self._http = LoginHttp(_shared_session(settings.itdr_http_timeout_seconds))

    # -- public API ------------------------------------------------------------------------

    def scope(self, resource: Resource | str) -> str:
        return scope_for(self._settings, resource)

    async def get_token(self, tenant: TenantRef | str, resource: Resource | str) -> str:
        """An access token for the resource in the tenant. Raises a TokenError subclass."""
        ref = parse_tenant(tenant)
        key = (self._guids.get(ref.value, ref.value), self.scope(resource))
        if (token := self._valid(key)) is not None:
            return token
        async with self._lock(("token", *key)):
            if (token := self._valid(key)) is not None:  # another caller just fetched it
                return token
            app = await self._app(ref)
            try:
                result: dict[str, Any] = await asyncio.to_thread(app.acquire_token_for_client, scopes=[key[1]])
            except requests.RequestException as exc:
                raise TransportError(
                    f"login: network error while getting a token ({type(exc).__name__})", service="login"
                ) from None
        if result and "access_token" in result:
            if result.get("token_source") != "cache":
                record_token_request()
            token = str(result["access_token"])
            self._remember(key, token, float(result.get("expires_in") or 0))
            return token
        raise self._token_error(result or {}, ref)

    def cached_token(self, tenant: TenantRef, resource: Resource | str) -> str | None:
        """A token still valid in the token map, without waiting (None: `get_token` would have to ask)."""
        return self._valid((self._guids.get(tenant.value, tenant.value), self.scope(resource)))

    async def tenant_id(self, tenant: TenantRef | str) -> str:
        """The tenant GUID. For a domain, Entra's OIDC discovery (done anyway by msal) tells us."""
        ref = parse_tenant(tenant)
        if ref.is_guid:
            return ref.value
        if ref.value not in self._guids:
            await self._app(ref)
        return self._guids.get(ref.value, ref.value)

    def forget(self, tenant: TenantRef | str) -> None:
        """Drop a tenant's msal app and tokens, e.g. right after consent: msal caches HTTP 400 errors for 60 s,
        and a token issued before the consent does not carry the new roles."""
        ref = parse_tenant(tenant)
        names = {ref.value, self._guids.get(ref.value, ref.value)}
        for name in names:
            self._apps.pop(name, None)
        for key in [key for key in self._tokens if key[0] in names]:
            del self._tokens[key]

    def close(self) -> None:
        self._apps.clear()
        self._tokens.clear()
        self._http.close()

    # -- internals ---------------------------------------------------------------------------

    def _valid(self, key: tuple[str, str]) -> str | None:
        entry = self._tokens.get(key)
        return entry[0] if entry is not None and entry[1] > time.time() else None

    def _remember(self, key: tuple[str, str], token: str, expires_in: float) -> None:
        self._tokens[key] = (token, time.time() + expires_in - EXPIRY_MARGIN_SECONDS)
        if len(self._tokens) > MAX_TOKENS:
            now = time.time()
            for stale in [k for k, (_, until) in self._tokens.items() if until <= now]:
                del self._tokens[stale]
            while len(self._tokens) > MAX_TOKENS:  # still full of live tokens: the oldest go first
                del self._tokens[next(iter(self._tokens))]

    def _lock(self, key: Hashable) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def _app(self, ref: TenantRef) -> msal.ConfidentialClientApplication:
        name = self._guids.get(ref.value, ref.value)
        app = self._apps.get(name)
        if app is not None:
            self._apps.move_to_end(name)
            return app
        async with self._lock(("app", ref.value)):
            app = self._apps.get(name)
            if app is None:
                app = built = await asyncio.to_thread(self._build_app, ref)
                # Discovery told us the GUID behind a domain: the same tenant addressed by GUID shares the app
                # and its tokens.
                resolved = str(built.authority.tenant).lower()
                if not ref.is_guid and is_guid(resolved):
                    self._guids[ref.value] = resolved
                    while len(self._guids) > MAX_TOKENS:
                        self._guids.popitem(last=False)
                    name = resolved
                self._apps[name] = app
                while len(self._apps) > self._max_apps:
                    self._apps.popitem(last=False)
            return app

    def _client_credential(self) -> str | dict[str, str]:
        if self._credential is None:
            cert_path = self._settings.itdr_client_certificate
            # A certificate wins when both are configured: it is the stronger credential.
            self._credential = load_certificate_credential(cert_path) if cert_path else self._secret
        assert self._credential is not None
        return self._credential

    def _build_app(self, ref: TenantRef) -> msal.ConfidentialClientApplication:
        """Runs in a worker thread: the constructor does OIDC discovery (over the network the first time a day)."""
        host = self._settings.authority_host
        credential = self._client_credential()
        try:
            return msal.ConfidentialClientApplication(
                self._client_id,
                client_credential=credential,
                authority=f"{host}/{ref.value}",
                http_client=self._http,
                token_cache=msal.TokenCache(),
                # Never ask login.microsoftonline.com which hosts exist: ours is configured, and msal would ask
                # again on each app's first token error (an unconsented tenant) otherwise.
                instance_discovery=False,
            )
        except ValueError as exc:
            text = str(exc)
            if "authority" in text.lower() or "OIDC Discovery" in text or "AADSTS90002" in text:
                cls, template = _AADSTS[90002]
                raise cls(template.format(tenant=ref.value), tenant=ref.value, aadsts=90002) from None
            raise ConfigurationError(f"msal rejected our configuration: {redact(text)[:200]}") from None
        except requests.RequestException as exc:
            raise TransportError(
                f"login: network error during tenant discovery ({type(exc).__name__})", service="login"
            ) from None

    def _token_error(self, result: dict[str, Any], ref: TenantRef) -> TokenError:
        description = redact(str(result.get("error_description") or ""))
        codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
        codes += [int(c) for c in _AADSTS_IN_TEXT.findall(description)]
        error = str(result.get("error") or "unknown_error")
        common: dict[str, Any] = {
            "tenant": ref.value,
            "error": error,
            "correlation_id": result.get("correlation_id"),
            "trace_id": result.get("trace_id"),
        }
        for code in codes:
            if code in _AADSTS:
                cls, template = _AADSTS[code]
                message = f"{template.format(tenant=ref.value)} (AADSTS{code})"
                return cls(message, aadsts=code, **common)
        first = codes[0] if codes else None
        # First sentence only: the rest is trace/correlation boilerplate.
        summary = description.split(". ")[0].split("\r\n")[0][:300] if description else error
        suffix = f" Correlation ID: {common['correlation_id']}." if common["correlation_id"] else ""
        log.info("token error for %s: %s (%s)", ref.value, error, first)
        return TokenError(
            f"Entra ID refused a token for tenant `{ref.value}`: {summary}.{suffix}",
            aadsts=first,
            transient=error in _TRANSIENT_ERRORS,
            **common,
        )
