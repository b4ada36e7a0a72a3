"""The user's side of Slack: realistic, correctly signed requests sent over real HTTP to the app.

Payload shapes follow Slack's documentation placeholders (T111, U111, C111) as bolt-python's own tests do.
Slash commands are form-encoded, interactivity is `payload=<JSON>`, events are raw JSON.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from tests.fakes.slack import TEAM_ID, FakeSlack

SIGNING_SECRET = "fake-signing-secret-0123456789abcdef"


@dataclass
class SlackSim:
    """Builds and signs Slack requests; sends them to `app_url` (…/slack/events) with httpx."""

    app_url: str
    fake: FakeSlack
    signing_secret: str = SIGNING_SECRET
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=10))
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _next(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    # ----------------
    #  transport
    # ----------------

    def signed_headers(
        self,
        body: str,
        *,
        content_type: str,
        timestamp: int | None = None,
        secret: str | None = None,
        retry_num: int | None = None,
    ) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        verifier = SignatureVerifier(secret or self.signing_secret)
        headers = {
            "content-type": content_type,
            "x-slack-request-timestamp": ts,
            "x-slack-signature": verifier.generate_signature(timestamp=ts, body=body),
        }
        if retry_num is not None:
            headers["x-slack-retry-num"] = str(retry_num)
            headers["x-slack-retry-reason"] = "http_timeout"
        return headers

    async def post(self, body: str, *, content_type: str, **sign: Any) -> httpx.Response:
        headers = self.signed_headers(body, content_type=content_type, **sign)
        return await self.http.post(self.app_url, content=body.encode(), headers=headers)

    async def aclose(self) -> None:
        await self.http.aclose()

    # ----------------
    #  payloads
    # ----------------

    def command_body(
        self,
        text: str,
        *,
        user: str = "U111",
        channel: str = "C111",
        response_url: str | None = None,
        trigger_id: str | None = None,
    ) -> dict[str, str]:
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "fake-msp",
            "channel_id": channel,
            "channel_name": "onboarding",
            "user_id": user,
            "user_name": "engineer",
            "command": "/itdr",
            "text": text,
            "api_app_id": "A111",
            "is_enterprise_install": "false",
            "response_url": response_url or self.fake.response_url(),
            "trigger_id": trigger_id or self._next("111.111.trigger"),
        }

    def action_payload(
        self,
        action_id: str,
        value: str,
        *,
        block_id: str = "itdr-answer-actions",
        user: str = "U111",
        channel: str = "C111",
        response_url: str | None = None,
        container: dict[str, Any] | None = None,
        view: dict[str, Any] | None = None,
        trigger_id: str | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "type": "block_actions",
            "team": {"id": TEAM_ID, "domain": "fake-msp"},
            "user": {"id": user, "username": "engineer", "team_id": TEAM_ID},
            "api_app_id": "A111",
            "token": "legacy-verification-token",
            "trigger_id": trigger_id or self._next("222.222.trigger"),
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "value": value,
                    "text": {"type": "plain_text", "text": "button"},
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        if view is not None:  # a Home tab click: no channel, no response_url
            payload["container"] = {"type": "view", "view_id": view.get("id", "V111")}
            payload["view"] = view
        else:
            payload["container"] = container or {
                "type": "message",
                "message_ts": "1700000000.000100",
                "channel_id": channel,
                "is_ephemeral": True,
            }
            payload["channel"] = {"id": channel, "name": "onboarding"}
            payload["response_url"] = response_url or self.fake.response_url()
        return payload

    def event_body(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": "A111",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or self._next("Ev"),
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": "W999", "is_bot": True}],
        }

    @staticmethod
    def home_opened_event(user: str = "U111", tab: str = "home") -> dict[str, Any]:
        return {
            "type": "app_home_opened",
            "user": user,
            "channel": "D111",
            "tab": tab,
            "event_ts": f"{time.time():.6f}",
        }

    # ----------------
    #  send
    # ----------------

    async def command(self, text: str, **kwargs: Any) -> tuple[httpx.Response, dict[str, str]]:
        """POST `/itdr text`; returns the HTTP response and the form that was sent (with its response_url)."""
        sign = {k: kwargs.pop(k) for k in ("timestamp", "secret", "retry_num") if k in kwargs}
        form = self.command_body(text, **kwargs)
        response = await self.post(urlencode(form), content_type="application/x-www-form-urlencoded", **sign)
        return response, form

    async def click(self, action_id: str, value: str, **kwargs: Any) -> tuple[httpx.Response, dict[str, Any]]:
        sign = {k: kwargs.pop(k) for k in ("timestamp", "secret", "retry_num") if k in kwargs}
        payload = self.action_payload(action_id, value, **kwargs)
        body = urlencode({"payload": json.dumps(payload)})
        response = await self.post(body, content_type="application/x-www-form-urlencoded", **sign)
        return response, payload

    def view_submission_payload(
        self, view: dict[str, Any], values: dict[str, dict[str, dict[str, Any]]], *, user: str = "U111"
    ) -> dict[str, Any]:
        """A `view_submission` of `view` (as the app opened it) with the typed input `values`."""
        return {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "fake-msp"},
            "user": {"id": user, "username": "engineer", "team_id": TEAM_ID},
            "api_app_id": "A111",
            "token": "legacy-verification-token",
            "trigger_id": self._next("333.333.trigger"),
            "view": view | {"id": "V" + self._next(""), "team_id": TEAM_ID, "state": {"values": values},
                            "hash": "1.abc", "app_id": "A111", "bot_id": "B999"},
            "response_urls": [],
        }

    async def submit(
        self, view: dict[str, Any], values: dict[str, dict[str, dict[str, Any]]], **kwargs: Any
    ) -> tuple[httpx.Response, dict[str, Any]]:
        payload = self.view_submission_payload(view, values, **kwargs)
        response = await self.post(urlencode({"payload": json.dumps(payload)}),
                                   content_type="application/x-www-form-urlencoded")
        return response, payload

    async def event(
        self, event: dict[str, Any], *, event_id: str | None = None, **sign: Any
    ) -> tuple[httpx.Response, dict[str, Any]]:
        body = self.event_body(event, event_id=event_id)
        response = await self.post(json.dumps(body), content_type="application/json", **sign)
        return response, body


def find_button(blocks: list[dict[str, Any]], action_id: str, text: str | None = None) -> dict[str, Any]:
    """The first button with `action_id` (and label `text`) in `blocks`, with its block_id attached."""
    for block in blocks:
        elements = list(block.get("elements") or [])
        if block.get("accessory"):
            elements.append(block["accessory"])
        for element in elements:
            if element.get("action_id") == action_id and (text is None or element["text"]["text"] == text):
                return element | {"block_id": block.get("block_id", "")}
    raise AssertionError(f"no {action_id!r} button{f' {text!r}' if text else ''} in the blocks")


def all_action_ids(blocks: list[dict[str, Any]]) -> set[str]:
    ids = set()
    for block in blocks:
        for element in [*(block.get("elements") or []), *([block["accessory"]] if block.get("accessory") else [])]:
            if "action_id" in element:
                ids.add(element["action_id"])
    return ids
