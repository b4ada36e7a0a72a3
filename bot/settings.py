"""Runtime settings, read from environment variables and an optional `.env` file, validated once.

Every Slack and Microsoft endpoint comes from here, so national clouds (GCC High, GovSlack) and the
tests' local fakes run the same code as commercial Slack and Microsoft 365. `load_settings` is the only
way in: a bad or missing value becomes one `ConfigError` line naming the variable and what it expects,
never a traceback and never the value (it may be a secret).
"""

from __future__ import annotations

import contextlib
import os
import re
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.logging import register_secrets
from catalog.words import counted

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_SLACK_PRINCIPAL = re.compile(r"[UWS][A-Z0-9]{2,20}")
_CHANNEL = re.compile(r"[CG][A-Z0-9]{6,20}")
_DOMAIN = re.compile(r"(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


class Mode(StrEnum):
    """How the process runs; each mode needs its own settings."""

    HTTP = "http"
    SOCKET = "socket"
    CONSOLE = "console"
    CLI = "cli"
    WORKER = "worker"


class ConfigError(Exception):
    """A missing or malformed setting; str(exc) is one line naming the environment variable."""


_MODE_NAMES = {Mode.HTTP: "`itdr serve` (HTTP mode)", Mode.SOCKET: "`itdr socket` (Socket Mode)",
               Mode.WORKER: "`itdr worker` (it shares its queue and state with the bot)"}
_REQUIRED: dict[Mode, tuple[str, ...]] = {
    Mode.HTTP: ("slack_bot_token", "slack_signing_secret"),
    Mode.SOCKET: ("slack_bot_token", "slack_app_token"),
    Mode.WORKER: ("slack_bot_token", "redis_url", "itdr_client_id"),
}


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- Slack -------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    port: int = Field(default=3000, ge=1, le=65535)
    log_level: LogLevel = "INFO"

    # --- Redis -------------------------------------------------------------------------------
    # Empty means "start an embedded server" (fine for the console and tests; state dies with the process).
    redis_url: SecretStr | None = None  # may carry a password
    redis_prefix: str = Field(default="itdr:", min_length=1, max_length=64)

    # --- Microsoft (readiness check) ---------------------------------------------------------
    itdr_client_id: str | None = None
    itdr_client_secret: SecretStr | None = None
    itdr_client_certificate: Path | None = None
    itdr_target_app_id: str | None = None
    itdr_authority_host: AnyHttpUrl = AnyHttpUrl("https://login.microsoftonline.com")
    itdr_graph_url: AnyHttpUrl = AnyHttpUrl("https://graph.microsoft.com")
    itdr_exchange_url: AnyHttpUrl = AnyHttpUrl("https://outlook.office365.com")
    itdr_cpv_mode: bool = False
    itdr_check_ttl_seconds: int = Field(default=900, ge=0)
    itdr_http_timeout_seconds: float = Field(default=20.0, gt=0, le=300)
    # One overall deadline per check: a Microsoft host that accepts connections but never answers must not
    # hold an engineer (or a sweep job) for minutes.
    itdr_check_deadline_seconds: float = Field(default=45.0, gt=0, le=600)
    # Checks running their Exchange cmdlets at once, across every process and machine (held in Redis).
    itdr_exchange_concurrency: int = Field(default=20, ge=1, le=500)
    # The tenant where the checking app is registered (tenant id or verified domain): `itdr doctor` reads the
    # app's own credential end dates there, and the worker warns the ops channel before they expire.
    itdr_home_tenant: str | None = None

    # --- Operations ------------------------------------------------------------------------------
    itdr_ops_channel: str | None = None  # a channel id (C…/G…): credential expiry, late sweeps, rejected credentials
    itdr_metrics_port: int | None = Field(default=None, ge=1, le=65535)  # `itdr worker`'s /metrics; unset: off
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per log line

    # --- Consent ---------------------------------------------------------------------------------
    # Slack user ids (U…/W…) and user-group ids (S…), separated by commas or spaces.
    itdr_approvers: str = ""
    itdr_required_approvals: int = Field(default=1, ge=1, le=10)
    itdr_consent_ttl_seconds: int = Field(default=259200, ge=60)
    # Must be a reply URL registered on the ITDR app; unset, Microsoft sends the admin to the app's own page.
    itdr_consent_redirect_uri: AnyHttpUrl | None = None
    # The key that signs consent buttons and links: one value for every process (serve, socket, worker).
    itdr_state_secret: SecretStr | None = Field(default=None, min_length=16)
    # The key before a rotation: values it signed still verify; new ones use ITDR_STATE_SECRET.
    itdr_state_secret_previous: SecretStr | None = Field(default=None, min_length=16)

    # --- Sweeps and drift ---------------------------------------------------------------------------
    itdr_sweep_cron: str = "0 */6 * * *"  # when every watched tenant is checked (cron, UTC)
    itdr_sweep_spread_seconds: int = Field(default=1800, ge=0, le=86400)  # sweep start times spread over this
    itdr_worker_concurrency: int = Field(default=20, ge=1, le=500)  # jobs at once per `itdr worker` process
    itdr_digest_threshold: int = Field(default=5, ge=1)  # more changed tenants per channel and sweep: one digest
    itdr_consent_poll_seconds: int = Field(default=120, ge=5, le=3600)
    # A job running longer is taken for lost (its worker died) and run again: above the check deadline.
    itdr_job_timeout_seconds: int = Field(default=75, ge=5, le=3600)
    # A worker delivering a channel's announcements holds it this long past each post; one that died is replaced
    # after this (and the periodic look, every ITDR_DELIVERY_CHECK_SECONDS, finds what it left).
    itdr_delivery_lease_seconds: int = Field(default=30, ge=2, le=600)
    itdr_delivery_check_seconds: int = Field(default=60, ge=1, le=3600)

    # --- validators ----------------------------------------------------------------------------

    @field_validator(
        "slack_bot_token", "slack_signing_secret", "slack_app_token", "redis_url", "itdr_client_id",
        "itdr_client_secret", "itdr_client_certificate", "itdr_target_app_id", "itdr_consent_redirect_uri",
        "itdr_state_secret", "itdr_state_secret_previous", "itdr_home_tenant", "itdr_ops_channel",
        "itdr_metrics_port", mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip().startswith("xoxb-"):
            raise ValueError("it must be a bot token starting with 'xoxb-'")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip().startswith("xapp-"):
            raise ValueError("it must be an app-level token starting with 'xapp-'")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _slack_api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("it must be an http(s) URL such as https://slack.com/api/")
        # slack_sdk joins method names with urljoin: without the slash, a path like /api is dropped.
        return value if value.endswith("/") else value + "/"

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        from redis.connection import parse_url

        url = value.get_secret_value().strip()
        expected = "expected redis://HOST[:PORT][/DB], rediss://… or unix:///PATH"
        if not url.startswith(_REDIS_SCHEMES):
            raise ValueError(expected)
        try:
            parsed = parse_url(url)
        except ValueError:
            raise ValueError(expected) from None  # redis-py's message can quote the URL (and its password)
        if not (parsed.get("path") or parsed.get("host")):
            raise ValueError(expected)
        port = parsed.get("port")
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(expected)
        return SecretStr(url)

    @field_validator("itdr_client_id", "itdr_target_app_id")
    @classmethod
    def _guid(cls, value: str | None) -> str | None:
        if value is not None and not _GUID.fullmatch(value.strip()):
            raise ValueError("expected an application (client) id, a GUID like 00000000-0000-0000-0000-000000000000")
        return value.strip().lower() if value else value

    @field_validator("itdr_home_tenant")
    @classmethod
    def _home_tenant(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not (_GUID.fullmatch(value) or _DOMAIN.fullmatch(value)):
            raise ValueError("expected a tenant id (GUID) or a verified domain such as contoso.onmicrosoft.com")
        return value

    @field_validator("itdr_ops_channel")
    @classmethod
    def _ops_channel(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL.fullmatch(value.strip()):
            raise ValueError("expected a Slack channel id such as C0123456789 (channel details, at the bottom)")
        return value.strip() if value else value

    @field_validator("itdr_client_certificate")
    @classmethod
    def _certificate(cls, value: Path | None) -> Path | None:
        if value is not None and not (value.is_file() and os.access(value, os.R_OK)):
            raise ValueError("expected a readable PEM file holding the private key and the certificate")
        return value

    @field_validator("itdr_approvers")
    @classmethod
    def _approvers(cls, value: str) -> str:
        ids = value.replace(",", " ").split()
        if bad := [slack_id for slack_id in ids if not _SLACK_PRINCIPAL.fullmatch(slack_id)]:
            raise ValueError(f"expected Slack user ids (U…, W…) or user-group ids (S…); "
                             f"{counted(len(bad), 'entry', 'entries')} {'is' if len(bad) == 1 else 'are'} not")
        return " ".join(ids)

    @field_validator("itdr_sweep_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value.strip()):
            raise ValueError("expected a cron expression such as '0 */6 * * *' (minute hour day month weekday)")
        return value.strip()

    @model_validator(mode="after")
    def _microsoft_complete(self) -> Settings:
        credential = self.itdr_client_secret is not None or self.itdr_client_certificate is not None
        if self.itdr_client_id and not credential:
            raise ValueError("ITDR_CLIENT_SECRET or ITDR_CLIENT_CERTIFICATE is not set; the readiness check needs "
                             "one of them with ITDR_CLIENT_ID")
        if self.itdr_job_timeout_seconds <= self.itdr_check_deadline_seconds:
            raise ValueError("ITDR_JOB_TIMEOUT_SECONDS must be longer than ITDR_CHECK_DEADLINE_SECONDS (a job runs "
                             "a whole check)")
        if not self.itdr_client_id and (credential or self.itdr_target_app_id):
            raise ValueError("ITDR_CLIENT_ID is not set; the readiness check needs it with the other ITDR_ settings")
        return self

    # --- derived values --------------------------------------------------------------------------

    @property
    def readiness_configured(self) -> bool:
        return self.itdr_client_id is not None

    @property
    def target_app_id(self) -> str:
        """The appId whose grants are checked: ITDR_TARGET_APP_ID, or the bot itself when it runs as the ITDR app."""
        return self.itdr_target_app_id or self.itdr_client_id or ""

    @property
    def approvers(self) -> tuple[str, ...]:
        """ITDR_APPROVERS as ids: users (U…, W…) and user groups (S…)."""
        return tuple(self.itdr_approvers.split())

    @property
    def redis_dsn(self) -> str | None:
        return self.redis_url.get_secret_value() if self.redis_url else None

    @cached_property
    def authority_host(self) -> str:
        return str(self.itdr_authority_host).rstrip("/")

    @cached_property
    def graph_url(self) -> str:
        return str(self.itdr_graph_url).rstrip("/")

    @cached_property
    def exchange_url(self) -> str:
        return str(self.itdr_exchange_url).rstrip("/")

    def secret(self, name: Literal["slack_bot_token", "slack_signing_secret", "slack_app_token"]) -> str:
        value = getattr(self, name)
        return value.get_secret_value().strip() if value is not None else ""

    def slack_web_url(self, path: str) -> str:
        """A Slack web page (a permalink, an app redirect) on the host SLACK_API_URL names."""
        return f"{self.slack_api_url.removesuffix('/').removesuffix('/api')}/{path.lstrip('/')}"

    def require(self, mode: Mode) -> None:
        """Raise ConfigError, naming the variable, when `mode` lacks a setting it needs."""
        for name in _REQUIRED.get(mode, ()):
            if getattr(self, name) is None:
                raise ConfigError(f"{name.upper()} is not set; it is required for {_MODE_NAMES[mode]}")
        if mode in _MODE_NAMES and self.approvers and self.itdr_state_secret is None:
            # Never a per-process or derived key: a card posted by one process must be clickable in every other,
            # and rotating a Slack secret must not void open cards.
            raise ConfigError("ITDR_STATE_SECRET is not set; consent (ITDR_APPROVERS) needs it, the same value for "
                              "`itdr serve`, `itdr socket` and `itdr worker` (16+ characters, e.g. "
                              "`openssl rand -hex 32`)")


#: Pydantic's wording for the common type errors, said as what the variable expects.
_EXPECTED = {
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "bool_parsing": "expected true or false",
    "url_parsing": "expected a URL such as https://host",
    "url_scheme": "expected an http(s) URL",
}


#: Bounds said in plain words ("ITDR_STATE_SECRET is too short: at least 16 characters"), not pydantic's
#: "16 items after validation".
_BOUNDS = {
    "too_short": ("is too short", "at least {min_length} characters"),
    "string_too_short": ("is too short", "at least {min_length} characters"),
    "too_long": ("is too long", "at most {max_length} characters"),
    "string_too_long": ("is too long", "at most {max_length} characters"),
    "greater_than_equal": ("is too small", "at least {ge}"),
    "greater_than": ("is too small", "more than {gt}"),
    "less_than_equal": ("is too large", "at most {le}"),
    "less_than": ("is too large", "less than {lt}"),
}


def validation_problems(exc: ValidationError) -> list[str]:
    """One line per problem, naming the variable and what it expects (never its value)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        message = _EXPECTED.get(error["type"]) or str(error["msg"]).removeprefix("Value error, ")
        if not error.get("loc"):  # a rule across several variables already names them
            lines.append(message)
            continue
        name = str(error["loc"][0]).upper()
        if (bound := _BOUNDS.get(error["type"])) is not None:
            with contextlib.suppress(KeyError, IndexError):
                lines.append(f"{name} {bound[0]}: {bound[1].format(**error.get('ctx', {}))}")
                continue
        lines.append(f"{name} is malformed: {message[:1].lower()}{message[1:]}")
    return lines


def _one_line(exc: ValidationError) -> str:
    return validation_problems(exc)[0]


def load_settings(mode: Mode | None = None, **overrides: Any) -> Settings:
    """Read and validate settings (environment, `.env`, then `overrides`), register every secret with the log
    redactor, and check what `mode` needs. Raises ConfigError with one line; never echoes a value."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    register_secrets(
        value.get_secret_value()
        for value in (settings.slack_bot_token, settings.slack_signing_secret, settings.slack_app_token,
                      settings.itdr_client_secret, settings.itdr_state_secret, settings.itdr_state_secret_previous)
        if value is not None
    )
    if settings.redis_dsn:
        from redis.connection import parse_url

        register_secrets([parse_url(settings.redis_dsn).get("password")])
    if mode is not None:
        settings.require(mode)
    return settings
