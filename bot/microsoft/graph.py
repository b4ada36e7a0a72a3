"""Microsoft Graph client: GET, paged GET and JSON batching, bound to one tenant."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.microsoft.errors import MicrosoftError, api_error_class
from bot.microsoft.http import MicrosoftHttp, Priority, collect_pages, parse_retry_after
from bot.microsoft.tenant import TenantRef, parse_tenant
from bot.microsoft.tokens import Resource, TokenProvider
from bot.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "graph"
MAX_BATCH = 20  # Graph's documented limit per $batch
# Synthesised when Graph leaves a sub-request out of the batch response; retried like a 503.
MISSING_STATUS = 502


def odata_string(value: str) -> str:
    """Quote a value for an OData filter or key: 'it''s' (single quotes are doubled)."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class SubRequest:
    """One request inside a $batch. `url` is relative to the version: "/organization?$select=id"."""

    id: str
    url: str
    method: str = "GET"
    headers: Mapping[str, str] | None = None
    body: Any = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "method": self.method, "url": self.url}
        headers = dict(self.headers or {})
        if self.body is not None:
            headers.setdefault("Content-Type", "application/json")
            data["body"] = self.body
        if headers:
            data["headers"] = headers
        return data


@dataclass(frozen=True, slots=True)
class SubResponse:
    """A sub-request's outcome. Header names are lowercased. `attempts` counts batch posts."""

    id: str
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> dict[str, Any]:
        err = self.body.get("error") if isinstance(self.body, dict) else None
        return err if isinstance(err, dict) else {}

    @property
    def error_code(self) -> str | None:
        return self.error.get("code")

    @property
    def error_message(self) -> str:
        return str(self.error.get("message") or f"HTTP {self.status}")

    def raise_for_status(self) -> None:
        if self.ok:
            return
        inner = self.error.get("innerError") or {}
        raise api_error_class(self.status)(
            f"{SERVICE}: {self.error_message}",
            service=SERVICE,
            status=self.status,
            code=self.error_code,
            request_id=inner.get("request-id") if isinstance(inner, dict) else None,
            retry_after=parse_retry_after(self.headers.get("retry-after")),
            body=self.body,
        )


def _check_relative(path: str) -> str:
    # Paths come from our code, but a stray absolute URL would send the token elsewhere.
    if not path.startswith("/") or path.startswith("//") or "://" in path:
        raise ValueError(f"Graph path must be relative and start with '/': {path[:80]!r}")
    return path


class GraphClient:
    """Graph calls for one tenant. Cheap to create; all instances share one httpx client."""

    def __init__(
        self,
        http: MicrosoftHttp,
        tokens: TokenProvider,
        settings: Settings,
        tenant: TenantRef | str,
        *,
        version: str = "v1.0",
        priority: Priority | None = None,
        max_pages: int = 500,
    ) -> None:
        self._http = http
        self._tokens = tokens
        self.tenant = parse_tenant(tenant)
        self._base = f"{settings.graph_url}/{version}"
        self._priority = priority
        self._max_pages = max_pages

    async def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        token = await self._tokens.get_token(self.tenant, Resource.GRAPH)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if self._priority:
            headers["x-ms-throttle-priority"] = self._priority
        headers.update(extra or {})
        return headers

    async def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET one resource; errors raise typed ApiError subclasses (NotFound, Forbidden, ...)."""
        url = self._base + _check_relative(path)
        return await self._get_url(url, headers)

    async def _get_url(self, url: str, headers: Mapping[str, str] | None) -> dict[str, Any]:
        response = await self._http.request("GET", url, service=SERVICE, headers=await self._headers(headers))
        body = response.json()
        if not isinstance(body, dict):
            raise MicrosoftError(f"{SERVICE}: unexpected response shape")
        return body

    async def get_all(self, path: str, *, headers: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """GET a collection, following @odata.nextLink verbatim until it is absent."""
        return await self.get_rest(self._base + _check_relative(path), headers=headers)

    async def get_rest(self, next_link: str, *, headers: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """A collection from `next_link` on, e.g. the rest of one whose first page came in a $batch."""
        return await collect_pages(next_link, lambda url: self._get_url(url, headers), base=self._base,
                                   service=SERVICE, max_pages=self._max_pages)

    async def batch(self, requests: Iterable[SubRequest] | Mapping[str, str]) -> dict[str, SubResponse]:
        """Run requests through $batch (20 per post, posts in parallel), correlated by id.

        Sub-requests that fail with 429/503/504 are re-posted alone after their Retry-After
        (or a jittered backoff); other failures (403, 404, ...) are returned as results. A
        sub-request still failing after the bounded attempts is returned with its last status.
        """
        if isinstance(requests, Mapping):
            subs = [SubRequest(id=str(k), url=v) for k, v in requests.items()]
        else:
            subs = list(requests)
        seen: set[str] = set()
        for sub in subs:
            _check_relative(sub.url)
            if not sub.id or sub.id in seen:
                raise ValueError(f"batch request ids must be unique and non-empty: {sub.id!r}")
            seen.add(sub.id)
        chunks = [subs[i : i + MAX_BATCH] for i in range(0, len(subs), MAX_BATCH)]
        if len(chunks) == 1:  # the usual case: awaited in place, no task for it
            parts = [await self._run_chunk(chunks[0])]
        else:
            parts = await asyncio.gather(*(self._run_chunk(chunk) for chunk in chunks))
        merged: dict[str, SubResponse] = {}
        for part in parts:
            merged.update(part)
        return {sub.id: merged[sub.id] for sub in subs}

    async def _run_chunk(self, chunk: list[SubRequest]) -> dict[str, SubResponse]:
        policy = self._http.policy
        pending = {sub.id: sub for sub in chunk}
        results: dict[str, SubResponse] = {}
        attempt = 0
        while pending:
            attempt += 1
            response = await self._http.request(
                "POST",
                f"{self._base}/$batch",
                service=SERVICE,
                headers=await self._headers({"Content-Type": "application/json"}),
                json={"requests": [sub.to_json() for sub in pending.values()]},
            )
            body = response.json()
            raw = body.get("responses") if isinstance(body, dict) else None
            by_id = {str(r.get("id")): r for r in raw or [] if isinstance(r, dict)}
            retry: dict[str, SubRequest] = {}
            waits: list[float | None] = []
            for sub_id, sub in pending.items():
                result = self._sub_response(sub_id, by_id.get(sub_id), attempt)
                results[sub_id] = result
                if result.status in policy.retry_statuses or result.status == MISSING_STATUS:
                    retry[sub_id] = sub
                    waits.append(parse_retry_after(result.headers.get("retry-after")))
            if not retry or attempt >= policy.max_attempts:
                break
            explicit = [w for w in waits if w is not None]
            delay = max(explicit) if explicit else policy.backoff(attempt, self._http.rng)
            if delay > policy.max_retry_after:
                break  # the caller sees the 429 with its Retry-After and can reschedule
            log.info("graph batch: retrying %d of %d sub-requests in %.1fs", len(retry), len(chunk), delay)
            await self._http.sleep(delay)
            pending = retry
        return results

    @staticmethod
    def _sub_response(sub_id: str, raw: Mapping[str, Any] | None, attempt: int) -> SubResponse:
        if raw is None:
            return SubResponse(
                sub_id,
                MISSING_STATUS,
                {"error": {"code": "MissingBatchResponse", "message": "Graph returned no response for this id"}},
                attempts=attempt,
            )
        headers = {str(k).lower(): str(v) for k, v in (raw.get("headers") or {}).items()}
        try:
            status = int(raw.get("status", 0))
        except (TypeError, ValueError):
            status = 0
        return SubResponse(sub_id, status, raw.get("body"), headers, attempts=attempt)


__all__ = ["GraphClient", "SubRequest", "SubResponse", "odata_string"]
