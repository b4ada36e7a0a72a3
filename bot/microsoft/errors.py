"""Typed errors for every way a Microsoft call can fail.

Messages are written for a human in Slack: they never contain a client secret, a token or raw
request bodies. Callers branch on the class (or `code`), not on message text.
"""

from __future__ import annotations

from typing import Any


class MicrosoftError(Exception):
    """Base class for everything raised by bot.microsoft."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidTenant(MicrosoftError, ValueError):
    """The text the user typed is not a tenant id or a plausible verified domain."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        # `reason` is for logs and tests; the raw input is deliberately not stored in the message.
        self.reason = reason


class ConfigurationError(MicrosoftError):
    """Our own configuration is incomplete or unreadable (client id, secret, certificate)."""


# --- Token acquisition ------------------------------------------------------------------------


class TokenError(MicrosoftError):
    """Entra ID refused to issue a token. `aadsts` is the AADSTS number when one was returned."""

    def __init__(
        self,
        message: str,
        *,
        tenant: str | None = None,
        aadsts: int | None = None,
        error: str | None = None,
        correlation_id: str | None = None,
        trace_id: str | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.aadsts = aadsts
        self.error = error
        self.correlation_id = correlation_id
        self.trace_id = trace_id
        self.transient = transient


class TenantNotFound(TokenError):
    """AADSTS90002: no such tenant (typo, deleted, or another cloud)."""


class AppNotInTenant(TokenError):
    """AADSTS700016: our app is not known in the tenant (never consented, or wrong tenant)."""


class MissingServicePrincipal(TokenError):
    """AADSTS7000229: the app registration exists but its service principal is missing."""


class ConsentRequired(TokenError):
    """AADSTS65001: admin consent has not been granted."""


class BadClientSecret(TokenError):
    """AADSTS7000215 / 7000222: our own client secret is wrong or expired. An ops problem."""


# --- HTTP APIs (Graph, Exchange admin API) ---------------------------


class ApiError(MicrosoftError):
    """A Microsoft API answered with an error status (after any retries)."""

    def __init__(
        self,
        message: str,
        *,
        service: str,
        status: int,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body


class BadRequest(ApiError):
    """400: the request was not accepted as written."""


class Unauthorized(ApiError):
    """401: the token was rejected."""


class Forbidden(ApiError):
    """403: the token is valid but lacks a permission or role."""


class NotFound(ApiError):
    """404: the object does not exist (e.g. the service principal of an app never consented)."""


class Throttled(ApiError):
    """429 still returned after the bounded retries, or Retry-After longer than we will wait."""


class ServiceUnavailable(ApiError):
    """5xx still returned after the bounded retries."""


class TransportError(MicrosoftError):
    """The request never got an HTTP answer (DNS, TLS, proxy, connection reset, timeout)."""

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(message)
        self.service = service


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    429: Throttled,
}


def api_error_class(status: int) -> type[ApiError]:
    if status >= 500:
        return ServiceUnavailable
    return _BY_STATUS.get(status, ApiError)
