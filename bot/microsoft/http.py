"""Shared HTTP plumbing: httpx client construction, retry/backoff policy and round-trip counting.

`MicrosoftClients` keeps one httpx.AsyncClient for Graph and one for Exchange, each shared across tenants, so
connections to each Microsoft host are pooled; their transport is aiohttp's (see `aiohttp_transport`) unless a
proxy is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import random
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from bot import metrics
from bot.microsoft.errors import ApiError, MicrosoftError, TransportError, api_error_class

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

USER_AGENT = "itdr-bot/0.1"


class Priority(StrEnum):
    """Graph's x-ms-throttle-priority: under pressure Graph throttles `low` first. Slack-triggered checks send
    `high`, background sweeps `low`, so people never wait behind a sweep."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


# --- TLS and proxy ---------------------------------------------------------------------------


def ca_bundle_path() -> str | None:
    """The CA bundle an operator asked for through the usual environment variables, if any.

    requests (used by msal) only reads REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE and httpx only
    SSL_CERT_FILE, so we resolve one answer here and hand it to both explicitly.
    """
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        value = os.environ.get(name)
        if value and os.path.exists(value):
            return value
    return None


def ssl_context() -> ssl.SSLContext:
    path = ca_bundle_path()
    if path:
        return ssl.create_default_context(cafile=path)
    cert_dir = os.environ.get("SSL_CERT_DIR")
    if cert_dir and os.path.isdir(cert_dir):
        return ssl.create_default_context(capath=cert_dir)
    import certifi  # httpx's own default trust store

    return ssl.create_default_context(cafile=certifi.where())


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def proxy_configured() -> bool:
    """Whether the environment names a proxy (httpx's trust_env honours it; the aiohttp transport would not)."""
    return any(os.environ.get(name) for name in _PROXY_VARIABLES)


def aiohttp_transport(context: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """httpx's API over aiohttp's connection pool: httpcore walks every pooled connection on each request, a large
    share of a warm check's CPU (README's benchmarks); aiohttp's pool is keyed by host and costs next to nothing."""

    def session() -> aiohttp.ClientSession:  # made on first use, inside the running event loop
        connector = aiohttp.TCPConnector(ssl=context, limit=limits.max_connections or 0,
                                         keepalive_timeout=limits.keepalive_expiry or 15.0)
        # No cookie jar: Microsoft's cookies mean nothing to app-only calls, and parsing them costs CPU. Proxies
        # never apply here (trust_env=False): with one configured, `build_async_client` keeps httpx's transport.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)

    return AiohttpTransport(verify=context, limits=limits, client=session)


def build_async_client(
    timeout_seconds: float = 20.0, *, max_connections: int = 200, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The one httpx client for Microsoft calls: over aiohttp (see `aiohttp_transport`), or over httpx's own
    transport when a proxy is configured, so trust_env=True keeps HTTPS_PROXY/NO_PROXY working."""
    # Every connection may stay open: httpcore counts all connections, not only idle ones, against the keep-alive
    # limit, so a lower one closes idle connections under load and pays a TLS handshake again.
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    context = ssl_context()
    if transport is None and not proxy_configured():
        transport = aiohttp_transport(context, limits)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
        limits=limits,
        verify=context,
        trust_env=True,
        follow_redirects=False,  # never forward a bearer token to wherever a redirect points
        headers={"User-Agent": USER_AGENT},
        transport=transport,
    )


# --- Round trips -----------------------------------------------------------------------------


@dataclass
class RoundTrips:
    """HTTP round trips made inside a `track_round_trips()` scope (retries included)."""

    total: int = 0
    retries: int = 0
    token_requests: int = 0
    by_service: Counter[str] = field(default_factory=Counter)

    def add(self, service: str, *, retry: bool) -> None:
        self.total += 1
        self.by_service[service] += 1
        if retry:
            self.retries += 1


_scopes: ContextVar[tuple[RoundTrips, ...]] = ContextVar("microsoft_round_trip_scopes", default=())


@contextlib.contextmanager
def track_round_trips() -> Iterator[RoundTrips]:
    """Count requests made by this task and the tasks it starts (context variables are inherited).

    Scopes nest, so a per-tenant check and a sweep-wide benchmark can both count at once.
    """
    counter = RoundTrips()
    token = _scopes.set((*_scopes.get(), counter))
    try:
        yield counter
    finally:
        _scopes.reset(token)


def record_round_trip(service: str, *, retry: bool = False) -> None:
    for counter in _scopes.get():
        counter.add(service, retry=retry)


def record_token_request() -> None:
    """A token was issued by Entra (not msal's cache); its HTTP round trip is counted by the login session."""
    for counter in _scopes.get():
        counter.token_requests += 1


# --- Paging ---------------------------------------------------------------------------------------


async def collect_pages(
    url: str, fetch: Callable[[str], Awaitable[dict[str, Any]]], *, base: str, service: str, max_pages: int
) -> list[dict[str, Any]]:
    """Every `value` item of a collection, following `@odata.nextLink` verbatim (Graph and Exchange page alike).

    Only links under `base` are followed: a link elsewhere would carry our bearer token to another host.
    """
    items: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        if not next_url.startswith(base + "/"):
            raise MicrosoftError(f"{service}: refusing to follow a nextLink outside {base}")
        pages += 1
        if pages > max_pages:
            raise MicrosoftError(f"{service}: more than {max_pages} pages, giving up")
        body = await fetch(next_url)
        items.extend(value for value in body.get("value") or [] if isinstance(value, dict))
        link = body.get("@odata.nextLink")
        next_url = str(link) if link else None
    return items


# --- Retry policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # the first try plus 4 retries
    base_delay: float = 1.0
    max_delay: float = 60.0
    # A Retry-After longer than this is not slept through in a worker: we raise Throttled with
    # retry_after so the job can be rescheduled instead.
    max_retry_after: float = 120.0
    retry_statuses: frozenset[int] = frozenset({429, 503, 504})

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Full-jitter exponential backoff for retry number `attempt` (1-based)."""
        return rng() * min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds; Microsoft sends integers, HTTP also allows a date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


ErrorParser = Callable[[httpx.Response], tuple[str | None, str]]


def default_error_parser(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) from a Graph-style `{"error": {"code", "message"}}` body."""
    try:
        body = response.json()
    except ValueError:
        return None, f"HTTP {response.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error.get("code"), str(error.get("message") or f"HTTP {response.status_code}")
    return None, f"HTTP {response.status_code}"


def request_id_of(response: httpx.Response) -> str | None:
    return response.headers.get("request-id") or response.headers.get("client-request-id")


def _default_error_class(status: int, code: str | None) -> type[ApiError]:
    return api_error_class(status)


class MicrosoftHttp:
    """Sends requests with bounded retries and counts round trips. No Microsoft semantics here."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.rng = rng

    def delay_for(self, attempt: int, retry_after: float | None) -> float:
        return retry_after if retry_after is not None else self.policy.backoff(attempt, self.rng)

    async def send_once(
        self,
        method: str,
        url: str,
        *,
        service: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        retry: bool = False,
    ) -> httpx.Response:
        """One round trip; transport failures become TransportError."""
        record_round_trip(service, retry=retry)
        started = time.monotonic()
        try:
            response = await self.client.request(method, url, headers=headers, params=params, json=json)
        except httpx.TimeoutException as exc:
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientError) and not isinstance(cause, asyncio.TimeoutError):
                # httpx-aiohttp files every lost connection (a server closing mid-request) as ConnectTimeout: say
                # what happened, as httpx's own transport does.
                raise TransportError(f"{service}: network error ({type(cause).__name__})", service=service) from exc
            raise TransportError(f"{service}: request timed out ({type(exc).__name__})", service=service) from exc
        except httpx.TransportError as exc:
            raise TransportError(f"{service}: network error ({type(exc).__name__})", service=service) from exc
        if log.isEnabledFor(logging.DEBUG):  # its arguments cost more than the check's own work on a request
            # Log the path only: the query can be long, and headers carry the bearer token.
            log.debug("%s %s %s -> %s in %.0f ms", service, method, response.request.url.path, response.status_code,
                      (time.monotonic() - started) * 1000)
        metrics.MICROSOFT_REQUESTS.labels(api=service, status=metrics.status_label(response.status_code)).inc()
        pct = response.headers.get("x-ms-throttle-limit-percentage")
        if pct:
            log.info("%s throttle limit at %s of quota", service, pct)
        return response

    async def request(
        self,
        method: str,
        url: str,
        *,
        service: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        error_parser: ErrorParser = default_error_parser,
        error_class: Callable[[int, str | None], type[ApiError]] | None = None,
        retry_statuses: frozenset[int] | None = None,
    ) -> httpx.Response:
        """Send with retries on 429/503/504 and network errors; raise a typed error otherwise."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.send_once(
                    method, url, service=service, headers=headers, params=params, json=json, retry=attempt > 1
                )
            except TransportError:
                if attempt >= self.policy.max_attempts:
                    raise
                delay = self.policy.backoff(attempt, self.rng)
                log.warning("%s network error, retry %d in %.1fs", service, attempt, delay)
                await self.sleep(delay)
                continue
            if response.status_code < 400:
                return response
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            retryable = response.status_code in (retry_statuses or self.policy.retry_statuses)
            too_long = retry_after is not None and retry_after > self.policy.max_retry_after
            if retryable and attempt < self.policy.max_attempts and not too_long:
                delay = self.delay_for(attempt, retry_after)
                log.warning("%s %s -> %d, retry %d in %.1fs", service, method, response.status_code, attempt, delay)
                metrics.THROTTLE_WAIT_SECONDS.labels(api=service).inc(delay)
                await self.sleep(delay)
                continue
            code, message = error_parser(response)
            factory = (error_class or _default_error_class)(response.status_code, code)
            suffix = f" (gave up after {attempt} attempts)" if retryable and attempt > 1 else ""
            try:
                body: Any = response.json()
            except ValueError:
                body = None
            raise factory(
                f"{service}: {message}{suffix}",
                service=service,
                status=response.status_code,
                code=code,
                request_id=request_id_of(response),
                retry_after=retry_after,
                body=body,
            )
