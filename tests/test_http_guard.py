"""HTTP hardening of `POST /slack/events` (bot/http_guard.py): size limit, signature, malformed bodies, logs.

Everything goes over real HTTP to the app served by uvicorn, except the few unit tests at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from starlette.requests import Request

from bot.http_guard import MAX_BODY_BYTES, Rejection, RejectionLog, read_body, to_starlette_response
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SIGNING_SECRET, SlackSim
from tests.ports import unused_port
from tests.test_slack_transport import settle

MARKER = "BODY-MARKER-7f3a9c"  # put in every rejected body; must never show up in a log
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def sign(body: bytes, *, timestamp: str | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """Slack's v0 signature over raw bytes (SlackSim signs text; some bodies here are not UTF-8)."""
    ts = str(int(time.time())) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"x-slack-request-timestamp": ts, "x-slack-signature": f"v0={digest}"}


async def post(slack: SlackSim, body: bytes | Any, headers: dict[str, str]) -> Any:
    return await slack.http.post(slack.app_url, content=body, headers=headers)


def help_form(slack: SlackSim, size: int | None = None) -> bytes:
    """A signed-able `/itdr help` form, padded with an extra field to exactly `size` bytes when given."""
    body = urlencode(slack.command_body("help")).encode()
    if size is not None:
        body += b"&pad=" + b"x" * (size - len(body) - len(b"&pad="))
        assert len(body) == size
    return body


class TestSizeLimit:
    async def test_content_length_over_1mib_is_413(self, slack: SlackSim, fake_slack: FakeSlack):
        body = (MARKER.encode() * (MAX_BODY_BYTES // len(MARKER) + 1))[: MAX_BODY_BYTES + 1]
        response = await post(slack, body, {"content-type": FORM} | sign(body))  # even correctly signed
        assert response.status_code == 413
        assert response.json() == {"error": "request too large"}
        await settle(fake_slack, slack)
        assert len(fake_slack.responses()) == 1

    async def test_exactly_1mib_is_accepted(self, slack: SlackSim, fake_slack: FakeSlack):
        body = help_form(slack, MAX_BODY_BYTES)
        response = await post(slack, body, {"content-type": FORM} | sign(body))
        assert response.status_code == 200
        assert response.json()["response_type"] == "ephemeral"

    async def test_chunked_body_over_1mib_is_413(self, slack: SlackSim, fake_slack: FakeSlack):
        chunk = (MARKER.encode() * 4096)[:65536]

        async def two_mib() -> AsyncIterator[bytes]:
            for _ in range(32):
                yield chunk

        request = slack.http.build_request("POST", slack.app_url, content=two_mib(), headers={"content-type": FORM})
        assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
        response = await slack.http.send(request)
        assert response.status_code == 413
        assert response.json() == {"error": "request too large"}
        await settle(fake_slack, slack)  # the connection pool and the server both carry on
        assert len(fake_slack.responses()) == 1


class TestSignature:
    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param(lambda b: sign(b, timestamp="abc"), id="timestamp-abc"),
            pytest.param(
                lambda b: sign(b) | {"x-slack-request-timestamp": "１７００".encode()}, id="timestamp-fullwidth-digits"
            ),
            pytest.param(lambda b: sign(b, timestamp="-5"), id="timestamp-negative"),
            pytest.param(lambda b: sign(b, timestamp=str(int(time.time()) - 301)), id="timestamp-stale"),
            pytest.param(lambda b: sign(b, timestamp=str(int(time.time()) + 305)), id="timestamp-future"),
            pytest.param(lambda b: {"x-slack-signature": sign(b)["x-slack-signature"]}, id="timestamp-missing"),
            pytest.param(lambda b: {"x-slack-request-timestamp": str(int(time.time()))}, id="signature-missing"),
            pytest.param(lambda b: sign(b) | {"x-slack-signature": "v0=00"}, id="signature-wrong"),
            pytest.param(lambda b: sign(b, secret="not-the-signing-secret"), id="signature-other-secret"),
            pytest.param(lambda b: sign(b) | {"x-slack-signature": "v0=é".encode()}, id="signature-not-ascii"),
            pytest.param(lambda b: {}, id="unsigned"),
        ],
    )
    async def test_rejected_with_401(self, slack: SlackSim, fake_slack: FakeSlack, headers):
        body = help_form(slack)
        response = await post(slack, body, {"content-type": FORM} | headers(body))
        assert response.status_code == 401
        assert response.json() == {"error": "invalid request"}
        await settle(fake_slack, slack)
        assert len(fake_slack.responses()) == 1, "a rejected request ran a listener"


class TestMalformed:
    @pytest.mark.parametrize(
        ("content_type", "body"),
        [
            pytest.param(JSON, b"{not json " + MARKER.encode(), id="json-garbage"),
            pytest.param(JSON, b"[1, 2, " + json.dumps(MARKER).encode() + b"]", id="json-array"),
            pytest.param(JSON, json.dumps(MARKER).encode(), id="json-string"),
            pytest.param(JSON, b"null", id="json-null"),
            pytest.param(FORM, b"payload=%7Bnot" + quote(MARKER).encode(), id="payload-garbage"),
            pytest.param(FORM, b"payload=" + quote(json.dumps([MARKER])).encode(), id="payload-array"),
            pytest.param(FORM, b"payload=", id="payload-empty"),
            pytest.param(FORM, b"command=%2Fitdr&text=" + MARKER.encode() + b"\xff\xfe", id="not-utf8"),
            pytest.param(JSON, b'{"type": "' + MARKER.encode() + b'\xc3\x28"}', id="not-utf8-json"),
            pytest.param(JSON, b"[" * 100_000 + MARKER.encode(), id="json-too-deep"),
            pytest.param(FORM, b"", id="empty"),
        ],
    )
    async def test_signed_malformed_body_is_400(self, slack: SlackSim, fake_slack: FakeSlack, content_type, body):
        response = await post(slack, body, {"content-type": content_type} | sign(body))
        assert response.status_code == 400
        assert response.json()["error"] == "malformed request"
        assert MARKER not in response.text
        await settle(fake_slack, slack)
        assert len(fake_slack.responses()) == 1


class TestGoodRequests:
    async def test_signed_command_still_answers(self, slack: SlackSim, fake_slack: FakeSlack):
        body = help_form(slack)
        response = await post(slack, body, {"content-type": FORM} | sign(body))
        assert response.status_code == 200
        assert response.json()["response_type"] == "ephemeral"
        assert "Usage:" in response.json()["text"]

    async def test_query_string_and_url_verification_pass_through(self, slack: SlackSim):
        body = json.dumps({"token": "t", "challenge": "chal-123", "type": "url_verification"}).encode()
        response = await slack.http.post(
            slack.app_url + "?x=1&x=2", content=body, headers={"content-type": JSON} | sign(body)
        )
        assert response.status_code == 200
        assert response.json() == {"challenge": "chal-123"}


class TestLogs:
    async def test_no_request_body_reaches_a_log_line(self, slack: SlackSim, fake_slack: FakeSlack, caplog):
        big = MARKER.encode() * (5 * 1024 * 1024 // len(MARKER))
        with caplog.at_level(logging.DEBUG):
            for _ in range(3):
                assert (await post(slack, big, {"content-type": FORM})).status_code == 413
            unsigned = b"command=%2Fitdr&text=" + MARKER.encode() * 1000
            for _ in range(3):
                assert (await post(slack, unsigned, {"content-type": FORM})).status_code == 401
            garbage = b"{" + MARKER.encode()
            assert (await post(slack, garbage, {"content-type": JSON} | sign(garbage))).status_code == 400
            # Signed and well-formed but unknown to every listener: Bolt's "unhandled request" paths.
            odd_type = json.dumps({"type": "x" * 60 + MARKER, "token": MARKER}).encode()
            assert (await post(slack, odd_type, {"content-type": JSON} | sign(odd_type))).status_code == 200
            odd_event = json.dumps(
                {"type": "event_callback", "event_id": "Ev9", "event": {"type": "nothing_we_know", "text": MARKER}}
            ).encode()
            assert (await post(slack, odd_event, {"content-type": JSON} | sign(odd_event))).status_code == 200
            await settle(fake_slack, slack)
        lines = [record.getMessage() for record in caplog.records]
        assert not [line for line in lines if MARKER in line]
        rejections = [r.getMessage() for r in caplog.records if r.name == "bot.http_guard"]
        assert len(rejections) == 3, rejections  # one per reason: size, signature, JSON (rate-limited)
        assert all(len(line) < 200 for line in rejections)

    async def test_bolt_keeps_its_own_check_and_logs_no_body(self, serve_app, caplog):
        """Defence in depth: Bolt's verification is on; if it ever fails, its log line carries no body."""
        app = serve_app().asgi.state.bolt
        with caplog.at_level(logging.DEBUG):
            response = await app.async_dispatch(
                AsyncBoltRequest(body="command=%2Fitdr&text=" + MARKER, headers={"content-type": FORM})
            )
        assert response.status == 401
        assert any("Invalid request signature" in r.getMessage() for r in caplog.records)
        assert not [r for r in caplog.records if MARKER in r.getMessage()]


class TestUnits:
    async def test_streamed_body_is_cut_off_not_buffered(self):
        chunk = b"x" * 65536
        received = 0

        async def endless() -> dict[str, Any]:
            nonlocal received
            received += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": True}

        scope = {"type": "http", "method": "POST", "path": "/slack/events", "headers": [], "query_string": b""}
        with pytest.raises(Rejection) as exc:
            await read_body(Request(scope, endless))
        assert exc.value.status == 413
        assert MAX_BODY_BYTES < received <= MAX_BODY_BYTES + len(chunk)

    def test_rejection_log_is_rate_limited_per_reason(self, caplog):
        now = [0.0]
        note = RejectionLog(logging.getLogger("t.rejections"), interval=10, clock=lambda: now[0])
        bad_sig, too_big = Rejection(401, "bad signature", {}), Rejection(413, "too big", {})
        with caplog.at_level(logging.INFO, logger="t.rejections"):
            for _ in range(50):
                note(bad_sig, "12")
                note(too_big, "5242880")
            now[0] = 11.0
            note(bad_sig, "12")
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 3
        assert lines[0] == "Slack request rejected with 401: bad signature (12 bytes)"
        assert lines[2] == "Slack request rejected with 401: bad signature (12 bytes); 49 more since the last such line"

    def test_response_keeps_status_every_header_value_and_body(self):
        bolt = BoltResponse(
            status=201, body='{"ok": true}', headers={"set-cookie": ["a=1", "b=2"], "x-one": "v"}
        )
        response = to_starlette_response(bolt)
        assert response.status_code == 201
        assert response.body == b'{"ok": true}'
        assert response.headers.getlist("set-cookie") == ["a=1", "b=2"]
        assert response.headers["x-one"] == "v"
        assert response.headers.getlist("content-type") == ["application/json;charset=utf-8"]
        assert response.headers["content-length"] == str(len(b'{"ok": true}'))


class TestServeProcess:
    """`itdr serve` as its own process, at LOG_LEVEL=DEBUG, fed what used to fill its log or crash a request."""

    @staticmethod
    async def healthz(http: httpx.AsyncClient, base: str, proc: asyncio.subprocess.Process, within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            assert proc.returncode is None, f"itdr serve exited with {proc.returncode}"
            try:
                response = await http.get(base + "/healthz")
                if response.status_code == 200:
                    assert response.json() == {"ok": True, "redis": "up"}
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "itdr serve did not answer /healthz"
            await asyncio.sleep(0.1)

    async def test_serve_survives_junk_with_a_small_log(
        self, fake_slack: FakeSlack, redis_url: str, redis_prefix: str, tmp_path
    ):
        port = unused_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ITDR_", "REDIS_"))}
        env |= {
            "SLACK_BOT_TOKEN": fake_slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake_slack.api_url,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": redis_prefix,
            "LOG_LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",
        }
        log_path = tmp_path / "serve.log"
        cmd = [sys.executable, "-m", "bot.cli", "serve", "--port", str(port), "--host", "127.0.0.1"]
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *cmd, env=env, cwd=tmp_path, stdout=log_file, stderr=asyncio.subprocess.STDOUT
            )
        slack = SlackSim(base + "/slack/events", fake_slack, http=httpx.AsyncClient(timeout=30))
        try:
            await self.healthz(slack.http, base, proc, within=30)

            five_mb = MARKER.encode() * (5 * 1024 * 1024 // len(MARKER))
            for _ in range(5):  # unsigned, as in the incident
                assert (await post(slack, five_mb, {"content-type": FORM})).status_code == 413
            unsigned = b"command=%2Fitdr&text=" + MARKER.encode() * 20_000  # under the limit: reaches the check
            assert (await post(slack, unsigned, {"content-type": FORM})).status_code == 401
            bad_ts = help_form(slack)
            bad_ts_headers = {"content-type": FORM} | sign(bad_ts, timestamp="abc")
            assert (await post(slack, bad_ts, bad_ts_headers)).status_code == 401
            malformed = [
                (JSON, b"{not json " + MARKER.encode()),
                (FORM, b"payload=%7Bnot" + quote(MARKER).encode()),
                (FORM, b"command=%2Fitdr&text=" + MARKER.encode() + b"\xff\xfe"),
                (JSON, json.dumps([MARKER]).encode()),
            ]
            for content_type, body in malformed:
                assert (await post(slack, body, {"content-type": content_type} | sign(body))).status_code == 400

            response, _ = await slack.command("help")
            assert response.status_code == 200
            assert response.json()["response_type"] == "ephemeral"

            assert proc.returncode is None, "itdr serve died"
            await self.healthz(slack.http, base, proc, within=5)

            proc.send_signal(signal.SIGTERM)
            returncode = await asyncio.wait_for(proc.wait(), 20)
            assert returncode in (0, -signal.SIGTERM), returncode  # uvicorn re-raises SIGTERM after shutting down
        finally:
            await slack.aclose()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        log_bytes = log_path.read_bytes()
        print(f"itdr serve log: {len(log_bytes)} bytes")
        assert len(log_bytes) < 64 * 1024, f"log grew to {len(log_bytes)} bytes"
        assert MARKER.encode() not in log_bytes
        assert b"Traceback" not in log_bytes
        assert log_bytes.count(b"rejected with 413") == 1  # five 5 MB posts, one short line
