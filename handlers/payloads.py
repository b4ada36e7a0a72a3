"""Typed button values: every button carries an `AnswerRequest` serialised as compact JSON."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from handlers.ids import SubCommand

MAX_BUTTON_VALUE = 2000


class BadPayload(ValueError):
    """A button value that is not an AnswerRequest (stale message, tampering)."""


class AnswerRequest(BaseModel):
    """What to answer: a sub-command, its arguments and, for paged answers, the page (0-based)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    cmd: SubCommand = Field(alias="c")
    args: tuple[str, ...] = Field(default=(), alias="a", max_length=8)
    page: int = Field(default=0, ge=0, le=1000, alias="p")

    def with_page(self, page: int) -> AnswerRequest:
        return self.model_copy(update={"page": page})

    def to_value(self) -> str:
        data: dict = {"c": self.cmd.value}
        if self.args:
            data["a"] = [a[:200] for a in self.args]
        if self.page:
            data["p"] = self.page
        value = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return value[:MAX_BUTTON_VALUE]

    @classmethod
    def from_value(cls, value: str | None) -> AnswerRequest:
        try:
            return cls.model_validate_json(value or "")
        except ValidationError as exc:
            raise BadPayload("button value is not an answer request") from exc

    def command_text(self) -> str:
        """The `/itdr` text that asks the same question (shown in shared answers and the console)."""
        return " ".join([self.cmd.value, *self.args])


class DriftValue(BaseModel):
    """The message an Acknowledge dialog is about (its private_metadata)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(max_length=80)
    channel: str = Field(pattern=r"^[CGD][A-Z0-9]{2,}$")
    ts: str = Field(pattern=r"^\d+\.\d+$")

    def to_value(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_value(cls, value: str | None) -> DriftValue:
        try:
            return cls.model_validate_json(value or "")
        except ValidationError as exc:
            raise BadPayload("not a drift message reference") from exc


class StartConsentValue(BaseModel):
    """What a "Start consent" button asks for (action id `consent-start`): a consent request for a tenant and a
    revision in the channel it is clicked in. Any surface (a check, a fix plan) may offer it; the click is checked
    like a typed `/itdr consent TENANT vN`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(max_length=256)
    version: str = Field(pattern=r"^v\d{1,4}$")

    def to_value(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_value(cls, value: str | None) -> StartConsentValue:
        try:
            return cls.model_validate_json(value or "")
        except ValidationError as exc:
            raise BadPayload("not a consent request reference") from exc


# A channel as Slack escapes it in command text (<#C123|name>, or <#C123>), or a bare id.
_CHANNEL = re.compile(r"<#([CG][A-Z0-9]{2,})(?:\|[^>]*)?>|([CG][A-Z0-9]{2,})")


def parse_channel(text: str) -> str | None:
    """The channel id in a channel mention or a bare id; None for anything else."""
    match = _CHANNEL.fullmatch(text.strip())
    return (match.group(1) or match.group(2)) if match else None
