"""App-only tokens from Entra ID via msal, one ConfidentialClientApplication per tenant.

msal is synchronous, so every call that may touch the network runs in a worker thread. Since
msal 1.23 acquire_token_for_client() is cache-first and refreshes on its own, so we do not keep
a second token cache; we only make sure one tenant+resource never has two token requests in flight.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import re
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

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"


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


def _shared_session(timeout: float) -> requests.Session:
    """One requests.Session for every tenant's msal app, so login connections are pooled."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64, max_retries=1)
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
        return send(*args, **kwargs)

    session.request = counted  # type: ignore[method-assign]
    return session


class TokenProvider:
    """Tokens for (tenant, resource), one msal app per tenant kept in a bounded LRU."""

    def __init__(self, settings: Settings, *, max_apps: int = 2048) -> None:
        if not settings.itdr_client_id:
            raise ConfigurationError("ITDR_CLIENT_ID is not set.")
        if not settings.itdr_client_secret and not settings.itdr_client_certificate:
            raise ConfigurationError("Set ITDR_CLIENT_SECRET or ITDR_CLIENT_CERTIFICATE.")
        self._settings = settings
        self._client_id = settings.itdr_client_id
        self._max_apps = max_apps
        self._apps: OrderedDict[str, msal.ConfidentialClientApplication] = OrderedDict()
        # Weak values: a lock lives only while someone waits on it, so the map cannot grow forever.
        self._locks: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = weakref.WeakValueDictionary()
        self._credential: str | dict[str, str] | None = None
        self._secret = settings.itdr_client_secret.get_secret_value() if settings.itdr_client_secret else None
        self._session = _shared_session(settings.itdr_http_timeout_seconds)
        self.token_requests = 0  # tokens fetched from Entra (not served from msal's cache)

    # -- public API ------------------------------------------------------------------------

    def scope(self, resource: Resource | str) -> str:
        return scope_for(self._settings, resource)

    async def get_token(self, tenant: TenantRef | str, resource: Resource | str) -> str:
        """An access token for the resource in the tenant. Raises a TokenError subclass."""
        ref = parse_tenant(tenant)
        scope = self.scope(resource)
        async with self._lock(("token", ref.value, scope)):
            app = await self._app(ref)
            try:
                result: dict[str, Any] = await asyncio.to_thread(app.acquire_token_for_client, scopes=[scope])
            except requests.RequestException as exc:
                raise TransportError(
                    f"login: network error while getting a token ({type(exc).__name__})", service="login"
                ) from None
        if result and "access_token" in result:
            if result.get("token_source") != "cache":
                self.token_requests += 1
                record_token_request()
            return str(result["access_token"])
        raise self._token_error(result or {}, ref)

    async def tenant_id(self, tenant: TenantRef | str) -> str:
        """The tenant GUID. For a domain, Entra's OIDC discovery (done anyway by msal) tells us."""
        ref = parse_tenant(tenant)
        if ref.is_guid:
            return ref.value
        app = await self._app(ref)
        resolved = str(app.authority.tenant).lower()
        return resolved if is_guid(resolved) else ref.value

    def forget(self, tenant: TenantRef | str) -> None:
        """Drop a tenant's msal app, e.g. right after consent: msal caches HTTP 400 errors for 60 s."""
        self._apps.pop(parse_tenant(tenant).value, None)

    def close(self) -> None:
        self._apps.clear()
        self._session.close()

    # -- internals ---------------------------------------------------------------------------

    def _lock(self, key: Hashable) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    def _redact(self, text: str) -> str:
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "***")
        return text

    async def _app(self, ref: TenantRef) -> msal.ConfidentialClientApplication:
        app = self._apps.get(ref.value)
        if app is not None:
            self._apps.move_to_end(ref.value)
            return app
        async with self._lock(("app", ref.value)):
            app = self._apps.get(ref.value)
            if app is None:
                app = built = await asyncio.to_thread(self._build_app, ref)
                self._apps[ref.value] = app
                # Discovery told us the GUID behind a domain: reuse this app (and its cached
                # tokens) when the same tenant is later addressed by GUID.
                resolved = str(built.authority.tenant).lower()
                if not ref.is_guid and is_guid(resolved):
                    self._apps.setdefault(resolved, app)
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
        """Runs in a worker thread: the constructor does OIDC discovery over the network."""
        host = self._settings.authority_host
        kwargs: dict[str, Any] = {}
        if host.lower() != DEFAULT_AUTHORITY_HOST:
            # msal would otherwise validate unknown hosts against login.microsoftonline.com.
            kwargs["instance_discovery"] = False
        credential = self._client_credential()
        try:
            return msal.ConfidentialClientApplication(
                self._client_id,
                client_credential=credential,
                authority=f"{host}/{ref.value}",
                http_client=self._session,
                token_cache=msal.TokenCache(),
                **kwargs,
            )
        except ValueError as exc:
            text = str(exc)
            if "authority" in text.lower() or "OIDC Discovery" in text or "AADSTS90002" in text:
                cls, template = _AADSTS[90002]
                raise cls(template.format(tenant=ref.value), tenant=ref.value, aadsts=90002) from None
            raise ConfigurationError(f"msal rejected our configuration: {self._redact(text)[:200]}") from None
        except requests.RequestException as exc:
            raise TransportError(
                f"login: network error during tenant discovery ({type(exc).__name__})", service="login"
            ) from None

    def _token_error(self, result: dict[str, Any], ref: TenantRef) -> TokenError:
        description = self._redact(str(result.get("error_description") or ""))
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
