"""The consent walk-through end to end: signed Slack requests over real HTTP to the served app, the fake Slack
receiving cards and dialogs, the fake Microsoft answering the readiness checks, state in a real Redis.

The served app is restarted between steps where it matters: everything lives in Redis, nothing in the process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from catalog import Kind, load_catalog
from tests.fakes.microsoft import FakeMicrosoft, TenantScenario
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim, find_button
from tests.test_readiness_check import complete_scenario
from tests.test_slack_check import microsoft_settings

catalog = load_catalog()
ROOT = Path(__file__).resolve().parents[1]
REQUESTER, APPROVER, SECOND, OUTSIDER = "U111", "U222", "U223", "U999"
CHANNEL = "C111"
STATE_SECRET = "consent-test-state-secret-1"


def grant(scenario: TenantScenario, version: str) -> None:
    """The admin consented: the tenant now grants every non-CPV item of `version`."""
    full = complete_scenario(version)
    scenario.app_role_assignments = full.app_role_assignments
    scenario.directory_roles = full.directory_roles


class Consent:
    """One served app (restartable) and the people who use it."""

    def __init__(self, serve: Callable[..., Any], fake: FakeSlack, settings: dict[str, Any]) -> None:
        self.serve, self.fake, self.settings = serve, fake, settings
        self.running = serve(**settings)
        self.slack = SlackSim(self.running.events_url, fake)

    def restart(self) -> None:
        """Stop the server and start a new one on the same Redis: a deploy between two steps."""
        self.running.stop()
        self.running = self.serve(**self.settings)
        self.slack.app_url = self.running.events_url

    async def ask(self, text: str, *, user: str = REQUESTER) -> dict[str, Any]:
        """`/itdr consent …`: the ephemeral answer that follows the ack."""
        response, form = await self.slack.command(text, user=user, channel=CHANNEL)
        assert response.status_code == 200
        ack = response.json()
        if "Preparing" not in ack["text"]:
            return ack  # refused at once
        return await self.fake.answer_at(form["response_url"], within=20)

    async def card(self, count: int = 1) -> dict[str, Any]:
        """The card as the channel sees it now: the last post or update."""
        posts = await self.fake.wait_for("chat.postMessage", count=1)
        updates = self.fake.calls_to("chat.update")
        if count > 1:
            updates = await self.fake.wait_for("chat.update", count=count - 1, within=20)
        return (updates[-1] if updates else posts[-1]).args

    async def click(self, card: dict[str, Any], action_id: str, *, user: str, value: str | None = None,
                    wait: bool = True) -> tuple[httpx.Response, dict[str, Any]]:
        button = find_button(card["blocks"], action_id)
        ts = self.posted_ts()
        response, payload = await self.slack.click(
            action_id, value if value is not None else button["value"], block_id=button["block_id"], user=user,
            channel=CHANNEL, container={"type": "message", "message_ts": ts, "channel_id": CHANNEL,
                                        "is_ephemeral": False})
        assert response.status_code == 200
        return response, payload

    def posted_ts(self) -> str:
        """The ts Slack gave the card (clicks on it carry it as their container's message_ts)."""
        return str(self.fake.calls_to("chat.postMessage")[-1].response["ts"])

    async def callback(self, **query: str) -> httpx.Response:
        return await self.slack.http.get(self.running.url + "/consent/callback", params=query)

    async def trail(self, redis_url: str, redis_prefix: str, tenant: str) -> list[str]:
        """Every audit action of a tenant, oldest first, as `itdr audit TENANT --json` reads them."""
        from bot.consent.store import ConsentStore
        from bot.store import RedisConnections

        redis = RedisConnections(redis_url, redis_prefix)
        try:
            return [record.action for record in await ConsentStore(redis.state).audit(tenant)]
        finally:
            await redis.aclose()

    async def audit(self, tenant: str) -> list[str]:
        response, _ = await self.slack.command(f"audit {tenant}", user=REQUESTER, channel=CHANNEL)
        return [line for block in response.json()["blocks"] if block["type"] == "section"
                for line in block["text"]["text"].splitlines()]


@pytest.fixture
def consent(microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any]) -> Iterator[Consent]:
    settings = microsoft_settings(microsoft) | {"itdr_approvers": f"{APPROVER},{SECOND},{REQUESTER},S0APPROVERS",
                                                "itdr_state_secret": STATE_SECRET}
    fake_slack.usergroups["S0APPROVERS"] = [f"U3{n:02d}" for n in range(60)]
    yield Consent(serve_app, fake_slack, settings)


def card_text(card: dict[str, Any]) -> str:
    return json.dumps(card["blocks"], ensure_ascii=False)


def grant_url(card: dict[str, Any]) -> str:
    return str(find_button(card["blocks"], "consent-grant")["url"])


def tenant_at(microsoft: FakeMicrosoft, version: str) -> TenantScenario:
    scenario = complete_scenario(version)
    scenario.display_name = "Fabrikam"
    return microsoft.add_tenant(scenario)


async def test_the_whole_path_from_request_to_verified_survives_restarts(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    tenant = tenant_at(microsoft, "v4")
    answer = await consent.ask(f"consent {tenant.domains[0]}")
    assert answer["text"].startswith("Posted the consent request for Fabrikam (v6)")
    (post,) = fake_slack.calls_to("chat.postMessage")
    card = post.args
    assert post.args["channel"] == CHANNEL
    text = card_text(card)
    for part in (tenant.tenant_id, tenant.domains[0], "Fabrikam", "v6 (2025-12-29", f"<@{REQUESTER}>",
                 "0 of 1", "Moving v4 → v6: new in v5: 36, v6: 1", "*Privileged:*", "Exchange Administrator",
                 "Privileged Identity Management"):
        assert part in text, part
    assert [e["text"]["text"] for e in card["blocks"][-2]["elements"]] == ["Review", "Approve", "Deny"]

    consent.restart()
    await consent.click(card, "consent-review", user=OUTSIDER)
    (review,) = await fake_slack.wait_for("views.open")
    asked = catalog.diff("v4", "v6").added
    assert all(item.name in json.dumps(review.args["view"]) for item in asked)

    consent.restart()
    await consent.click(card, "consent-approve", user=APPROVER)
    approved = await consent.card(count=2)
    assert f"Approved by <@{APPROVER}>" in card_text(approved)
    url = urlsplit(grant_url(approved))
    assert url.path == f"/{tenant.tenant_id}/adminconsent"
    query = parse_qs(url.query)
    assert query["client_id"] == [microsoft.target_app_id] and "redirect_uri" not in query
    state = query["state"][0]

    consent.restart()
    grant(tenant, "v6")  # the Global Administrator consents in the browser
    page = await consent.callback(admin_consent="True", tenant=tenant.tenant_id, state=state)
    assert page.status_code == 200 and "Consent granted and verified" in page.text
    assert fake_slack.api_url.removesuffix("api/") + "app_redirect?channel=C111" in page.text  # SLACK_API_URL's host
    verified = await consent.card(count=3)
    assert "*Verified*" in card_text(verified)
    assert not [b for b in verified["blocks"] if b["type"] == "actions" and
                any(e.get("action_id") == "consent-approve" for e in b["elements"])]

    consent.restart()
    replay = await consent.callback(admin_consent="True", tenant=tenant.tenant_id, state=state)
    assert replay.status_code == 400 and "Nothing was changed" in replay.text

    lines = await consent.audit(tenant.domains[0])
    actions = [line.split("*")[1] for line in lines if line.startswith("`")]
    assert actions == ["requested", "approved", "link_issued", "admin_returned", "verified", "refused"]
    assert any("admin returned (unverified)" in line for line in lines)


async def test_outsiders_requesters_and_second_clicks_are_turned_away_privately(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    card = await consent.card()
    for user, why in ((OUTSIDER, "Only the configured approvers"), (REQUESTER, "your own request")):
        _, payload = await consent.click(card, "consent-approve", user=user)
        refusal = await fake_slack.answer_at(payload["response_url"])
        assert refusal["response_type"] == "ephemeral" and why in refusal["text"]
    assert fake_slack.calls_to("chat.update") == [], "nothing changed"
    await consent.click(card, "consent-approve", user=APPROVER)
    await consent.card(count=2)
    _, payload = await consent.click(card, "consent-approve", user=SECOND)
    late = await fake_slack.answer_at(payload["response_url"])
    assert f"already approved by <@{APPROVER}>" in late["text"]
    lines = await consent.audit(tenant.tenant_id)
    assert sum("*refused*" in line for line in lines) == 3


async def test_deny_needs_a_reason_and_the_card_shows_who_and_why(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    card = await consent.card()
    _, payload = await consent.click(card, "consent-deny", user=OUTSIDER)
    assert "Only the configured approvers" in (await fake_slack.answer_at(payload["response_url"]))["text"]
    await consent.click(card, "consent-deny", user=APPROVER)
    (opened,) = await fake_slack.wait_for("views.open")
    dialog = opened.args["view"]
    empty, _ = await consent.slack.submit(dialog, {"consent-deny-reason": {"reason": {"type": "plain_text_input",
                                                                                         "value": "   "}}},
                                          user=APPROVER)
    assert empty.json() == {"response_action": "errors", "errors": {"consent-deny-reason": "A denial needs a reason."}}
    assert fake_slack.calls_to("chat.update") == []
    done, _ = await consent.slack.submit(dialog, {"consent-deny-reason": {"reason": {
        "type": "plain_text_input", "value": "Customer has not signed the contract yet"}}}, user=APPROVER)
    assert done.status_code == 200 and done.text == ""
    denied = await consent.card(count=2)
    assert f"Denied by <@{APPROVER}>" in card_text(denied) and "not signed the contract" in card_text(denied)
    assert "consent-approve" not in card_text(denied)
    lines = await consent.audit(tenant.tenant_id)
    assert any("*denied*" in line and "not signed the contract" in line for line in lines)
    assert any("*refused*" in line and "empty deny reason" in line for line in lines)


async def test_fifty_simultaneous_approvals_make_one_transition(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    card = await consent.card()
    approvers = [f"U3{n:02d}" for n in range(50)]  # members of the S0APPROVERS group
    await asyncio.gather(*(consent.click(card, "consent-approve", user=user) for user in approvers))
    await fake_slack.wait_for("chat.update")
    await asyncio.sleep(0.5)  # anything else in flight lands
    assert len(fake_slack.calls_to("chat.update")) == 1, "one card update per state"
    actions = await consent.trail(redis_url, redis_prefix, tenant.tenant_id)
    assert actions.count("approved") == 1 and actions.count("link_issued") == 1
    assert actions.count("refused") == 49


async def test_two_approvals_when_two_are_required(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any]
) -> None:
    consent.settings |= {"itdr_required_approvals": 2}
    consent.restart()
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    card = await consent.card()
    assert "0 of 2" in card_text(card)
    await consent.click(card, "consent-approve", user=APPROVER)
    half = await consent.card(count=2)
    assert "1 of 2" in card_text(half) and "consent-approve" in card_text(half)
    await consent.click(half, "consent-approve", user=SECOND)
    done = await consent.card(count=3)
    assert f"Approved by <@{SECOND}>" in card_text(done) and "consent-grant" in card_text(done)


async def test_asking_again_links_to_the_open_card_and_a_satisfied_tenant_gets_no_card(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    again = await consent.ask(f"consent {tenant.domains[0]} v6", user=SECOND)
    assert f"is already open: {fake_slack.api_url.removesuffix('api/')}archives/C111/p" in again["text"]
    ready = tenant_at(microsoft, "v6")
    answer = await consent.ask(f"consent {ready.tenant_id}")
    assert "already grants everything v6 asks for" in answer["text"]
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


async def test_an_expired_request_says_so_loses_its_buttons_and_stays_readable(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    card = await consent.card()
    client = aioredis.Redis.from_url(redis_url)
    try:  # let 72 hours pass for this request
        [key] = [k async for k in client.scan_iter(match=f"{redis_prefix}consent:req:*")]
        data = json.loads(await client.get(key))
        data["expires_at"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        await client.set(key, json.dumps(data), keepttl=True)
        _, payload = await consent.click(card, "consent-approve", user=APPROVER)
        assert "expired" in (await fake_slack.answer_at(payload["response_url"]))["text"]
        expired = await consent.card(count=2)
        assert "Consent request expired" in expired["text"] and "consent-approve" not in card_text(expired)
        assert await client.ttl(key) > 29 * 24 * 3600, "an expired request stays readable for 30 days"
    finally:
        await client.aclose()
    lines = await consent.audit(tenant.tenant_id)
    assert [line.split("*")[1] for line in lines] == ["requested", "expired", "refused"]


async def test_forged_buttons_and_callbacks_change_nothing(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    card = await consent.card()
    value = find_button(card["blocks"], "consent-approve")["value"]
    request_id = value.split(".")[0]
    for forged in (f"{request_id}.AAAAAAAAAAAAAAAAAAAAAA", "not-a-value", ""):
        _, payload = await consent.click(card, "consent-approve", user=APPROVER, value=forged)
        assert "not issued by itdr" in (await fake_slack.answer_at(payload["response_url"]))["text"]
    assert fake_slack.calls_to("chat.update") == []
    bad = await consent.callback(admin_consent="True", tenant=tenant.tenant_id, state=f"{request_id}.x.y")
    assert bad.status_code == 400 and "not valid" in bad.text
    await consent.click(card, "consent-approve", user=APPROVER)
    approved = await consent.card(count=2)
    state = parse_qs(urlsplit(grant_url(approved)).query)["state"][0]
    other = await consent.callback(admin_consent="True", tenant=str(uuid.uuid4()), state=state)
    assert other.status_code == 400 and "another tenant" in other.text
    lines = await consent.audit(tenant.tenant_id)
    assert sum("forged or edited button value" in line for line in lines) == 3
    assert any("callback for tenant" in line for line in lines)
    # The real admin can still use the link: the refused callback consumed nothing.
    grant(tenant, "v6")
    good = await consent.callback(admin_consent="True", tenant=tenant.tenant_id, state=state)
    assert good.status_code == 200


async def test_consent_declined_by_the_admin_is_shown_and_can_be_retried(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    await consent.click(await consent.card(), "consent-approve", user=APPROVER)
    approved = await consent.card(count=2)
    state = parse_qs(urlsplit(grant_url(approved)).query)["state"][0]
    # Microsoft's declined redirect: error, error_description and state, no tenant
    # (/work/shared/reference/microsoft-apis.md §7, from Microsoft's v2-admin-consent doc).
    page = await consent.callback(error="access_denied", state=state,
                                  error_description="AADSTS65004: User declined to consent")
    assert page.status_code == 200 and "Consent was not granted" in page.text and "AADSTS65004" in page.text
    failed = await consent.card(count=3)
    assert "Consent not granted:* access_denied: AADSTS65004" in card_text(failed)
    assert grant_url(failed), "the card offers the link again"
    assert "callback_failed" in await consent.trail(redis_url, redis_prefix, tenant.tenant_id)
    # The admin tries again and grants: the link still works (a declined or replayed call retires nothing).
    grant(tenant, "v6")
    retry_state = parse_qs(urlsplit(grant_url(failed)).query)["state"][0]
    good = await consent.callback(admin_consent="True", tenant=tenant.tenant_id, state=retry_state)
    assert good.status_code == 200 and "verified" in good.text


async def test_a_forged_return_without_the_grant_neither_verifies_nor_locks_the_admin_out(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    await consent.click(await consent.card(), "consent-approve", user=APPROVER)
    state = parse_qs(urlsplit(grant_url(await consent.card(count=2))).query)["state"][0]
    # Someone holding the link calls the callback before the admin consented (and again, and with an error).
    for query in ({"tenant": tenant.tenant_id}, {"tenant": tenant.tenant_id}, {"error": "x", "error_description": "y"}):
        page = await consent.callback(admin_consent="True", state=state, **query)
        assert page.status_code == 200 and "verified" not in page.text.replace("not verified yet", "")
    trail = await consent.trail(redis_url, redis_prefix, tenant.tenant_id)
    assert "verified" in trail and trail.count("admin_returned") == 2
    from bot.consent.store import ConsentStore
    from bot.store import RedisConnections

    redis = RedisConnections(redis_url, redis_prefix)
    try:
        request_id = find_button((await consent.card(count=2))["blocks"], "consent-verify")["value"].split(".")[0]
        assert (await ConsentStore(redis.state).get(request_id)).state.value == "approved"
    finally:
        await redis.aclose()
    grant(tenant, "v6")  # the real admin consents and comes back by the same link
    good = await consent.callback(admin_consent="True", tenant=tenant.tenant_id, state=state)
    assert good.status_code == 200 and "Consent granted and verified" in good.text


async def test_verify_now_shows_what_is_still_missing(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    await consent.click(await consent.card(), "consent-approve", user=APPROVER)
    approved = await consent.card(count=2)
    await consent.click(approved, "consent-verify", user=REQUESTER)
    waiting = await consent.card(count=3)
    assert "1 still missing*: `AppRoleAssignment.ReadWrite.All`" in card_text(waiting)
    grant(tenant, "v6")
    await consent.click(waiting, "consent-verify", user=REQUESTER)
    assert "*Verified*" in card_text(await consent.card(count=4))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("consent contoso.com'/../x", "doesn't look like a Microsoft 365 tenant"),
        ("consent 3f2c8a63-2a1b-4c2e-9f64-2b9f0c6c1a11 v9", "There is no revision 'v9'"),
        ("consent", "`consent` needs a tenant id or domain"),
    ],
)
async def test_bad_input_is_refused_in_the_ack_and_records_nothing(
    consent: Consent, fake_slack: FakeSlack, text: str, expected: str
) -> None:
    answer = await consent.ask(text)
    assert expected in answer["text"]
    assert fake_slack.calls_to("chat.postMessage") == []


async def test_without_approvers_consent_explains_the_setting(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any]
) -> None:
    consent = Consent(serve_app, fake_slack, microsoft_settings(microsoft))
    answer = await consent.ask(f"consent {tenant_at(microsoft, 'v5').tenant_id}")
    assert "ITDR_APPROVERS" in answer["text"]
    assert fake_slack.calls_to("chat.postMessage") == []


async def test_with_redis_down_nothing_is_decided_without_its_record(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any]
) -> None:
    settings = microsoft_settings(microsoft) | {"itdr_approvers": APPROVER, "itdr_state_secret": STATE_SECRET,
                                                "redis_url": "redis://127.0.0.1:1/0"}
    consent = Consent(serve_app, fake_slack, settings)
    answer = await consent.ask(f"consent {tenant_at(microsoft, 'v5').tenant_id}")
    assert answer["text"].startswith("Redis is unreachable, so")
    assert fake_slack.calls_to("chat.postMessage") == []


async def test_a_channel_the_bot_is_not_in_gets_how_to_invite_it(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    fake_slack.fail("chat.postMessage", error="not_in_channel")
    tenant = tenant_at(microsoft, "v5")
    answer = await consent.ask(f"consent {tenant.tenant_id}")
    assert "/invite @itdr" in answer["text"]
    fake_slack.calls.clear()
    answer = await consent.ask(f"consent {tenant.tenant_id}")  # the slot was given back
    assert answer["text"].startswith("Posted the consent request")


def test_the_catalog_names_what_huntress_adds() -> None:
    adds = [item.name for item in catalog.items_at("v6") if item.huntress_adds]
    assert adds and all(catalog.get(name).kind is Kind.directory_role for name in adds)  # type: ignore[union-attr]


async def test_itdr_audit_json_prints_the_trail_oldest_first(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    await consent.click(await consent.card(), "consent-approve", user=APPROVER)
    await consent.card(count=2)
    env = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "PYTHONPATH": str(ROOT), "PATH": os.environ["PATH"]}
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot.cli", "audit", tenant.domains[0],
                                                      "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [e["action"] for e in entries] == ["requested", "approved", "link_issued"]
    assert set(entries[0]) == {"at", "tenant", "request_id", "action", "actor", "detail"}
    assert entries[0]["actor"] == REQUESTER and entries[1]["actor"] == APPROVER
    assert {e["tenant"] for e in entries} == {tenant.tenant_id}
    assert entries[0]["at"] <= entries[1]["at"] <= entries[2]["at"]


async def test_two_servers_behind_one_load_balancer_behave_as_one(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    other = consent.serve(**consent.settings)  # a second `itdr serve` on the same Redis
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    card = await consent.card()
    consent.slack.app_url = other.events_url  # the balancer sends the click to the other process
    await consent.click(card, "consent-approve", user=APPROVER)
    approved = await consent.card(count=2)
    state = parse_qs(urlsplit(grant_url(approved)).query)["state"][0]
    grant(tenant, "v6")
    page = await consent.slack.http.get(other.url + "/consent/callback",
                                        params={"admin_consent": "True", "tenant": tenant.tenant_id, "state": state})
    assert page.status_code == 200
    replay = await consent.callback(admin_consent="True", tenant=tenant.tenant_id, state=state)  # the first one
    assert replay.status_code == 400


async def test_a_redis_without_persistence_is_warned_about_at_start(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.runtime import Runtime
    from bot.settings import Mode, load_settings

    probe = aioredis.Redis.from_url(redis_url)
    try:
        persistent = (await probe.config_get("appendonly")).get("appendonly") == "yes" or bool(
            (await probe.config_get("save")).get("save"))
    finally:
        await probe.aclose()
    if persistent:
        pytest.skip("this Redis keeps data on disk; the warning is for one that does not")
    settings = load_settings(_env_file=None, slack_bot_token="xoxb-t", slack_signing_secret="s", redis_url=redis_url,
                             redis_prefix=redis_prefix)
    async with Runtime.open(settings, Mode.HTTP):
        pass
    assert any("neither AOF nor RDB" in record.getMessage() for record in caplog.records)
