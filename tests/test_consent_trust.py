"""Issue 14: a consent record you can trust and state Redis cannot silently lose, over the real protocols (signed
Slack HTTP to the served app, the fake Slack checking every payload, the fake Microsoft, a real Redis; an embedded
Redis of our own where a test flushes it or changes its configuration)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis.asyncio as aioredis

from bot.consent.signing import BadSignature, Signer
from bot.drift.store import DriftStore
from bot.settings import ConfigError, Mode, load_settings
from bot.store import EmbeddedRedis
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim, find_button
from tests.test_consent import (
    APPROVER,
    OUTSIDER,
    STATE_SECRET,
    Consent,
    card_text,
    grant_url,
    tenant_at,
)
from tests.test_consent import consent as consent
from tests.test_drift_slack import drift_card
from tests.test_drift_slack import slack as slack  # fixture: the served app with Microsoft configured
from tests.test_drift_slack import store as store  # fixture
from tests.test_slack_check import microsoft_settings

EVIL = "Evil <!channel> <http://x|click>"


def assert_inert(payload: dict[str, Any]) -> None:
    """Nothing Microsoft named can ping or link: neither in the blocks nor in the fallback text."""
    texts: list[str] = [str(payload.get("text") or "")]

    def walk(node: Any) -> None:  # every mrkdwn text (plain_text is never parsed for mentions or links)
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                texts.append(str(node.get("text")))
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(payload.get("blocks"))
    rendered = "\n".join(texts)
    assert "<!channel>" not in rendered and "<http://x" not in rendered, rendered
    assert "Evil" in rendered


async def test_ten_simultaneous_asks_post_one_card_and_tell_the_others_where(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    tenant = tenant_at(microsoft, "v5")
    fake_slack.delay("chat.postMessage", 1.5)  # the first card is still on its way while the others ask
    answers = await asyncio.gather(*(consent.ask(f"consent {tenant.tenant_id}", user=f"U5{n:02d}")
                                     for n in range(10)))
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    posted = [answer for answer in answers if answer["text"].startswith("Posted")]
    assert len(posted) == 1
    for answer in answers:
        if answer not in posted:
            assert "already open" in answer["text"] and "C111" in answer["text"], answer["text"]


async def test_a_tenant_named_to_ping_the_channel_never_pings_or_links(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    tenant = tenant_at(microsoft, "v5")
    tenant.display_name = EVIL
    answer = await consent.ask(f"consent {tenant.tenant_id}")
    assert_inert(answer)
    assert_inert(await consent.card())
    again = await consent.ask(f"consent {tenant.tenant_id}", user=APPROVER)
    assert "already open" in again["text"]
    assert_inert(again)
    response, form = await consent.slack.command(f"check {tenant.tenant_id}", user=APPROVER, channel="C111")
    assert response.status_code == 200
    assert_inert(await fake_slack.answer_at(form["response_url"], within=20))


def test_serve_socket_and_worker_with_consent_need_one_shared_state_secret() -> None:
    base = {"_env_file": None, "slack_bot_token": "xoxb-t", "slack_signing_secret": "s", "slack_app_token": "xapp-t",
            "redis_url": "redis://127.0.0.1:6379/0", "itdr_client_id": "00000000-0000-0000-0000-000000000001",
            "itdr_client_secret": "c", "itdr_approvers": "U222"}
    for mode in (Mode.HTTP, Mode.SOCKET, Mode.WORKER):
        with pytest.raises(ConfigError) as refused:
            load_settings(mode, **base)
        assert str(refused.value).startswith("ITDR_STATE_SECRET is not set") and "\n" not in str(refused.value)
        load_settings(mode, **base, itdr_state_secret=STATE_SECRET)  # starts
    load_settings(Mode.HTTP, **(base | {"itdr_approvers": ""}))  # no consent, no key needed


def test_a_rotated_state_secret_still_verifies_values_signed_with_the_previous_one() -> None:
    old = Signer(b"old-state-secret-0123456789")
    value = old.sign("consent-button", "request1")
    rotated = Signer(b"new-state-secret-0123456789", previous=b"old-state-secret-0123456789")
    assert rotated.verify("consent-button", value, 1) == ("request1",)
    fresh = rotated.sign("consent-button", "request2")
    with pytest.raises(BadSignature):
        old.verify("consent-button", fresh, 1)  # new values use the new key
    with pytest.raises(BadSignature):
        Signer(b"new-state-secret-0123456789").verify("consent-button", value, 1)  # PREVIOUS removed: refused


async def test_rotating_both_secrets_keeps_open_cards_clickable(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    card = await consent.card()
    new_slack_secret = "rotated-signing-secret-0123456789"
    consent.settings = consent.settings | {"itdr_state_secret": "rotated-state-secret-01",
                                           "itdr_state_secret_previous": STATE_SECRET,
                                           "slack_signing_secret": new_slack_secret}
    consent.restart()
    consent.slack.signing_secret = new_slack_secret
    await consent.click(card, "consent-approve", user=APPROVER)
    approved = await consent.card(count=2)
    assert f"Approved by <@{APPROVER}>" in card_text(approved)


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A Redis only this test uses: it may be flushed or reconfigured (never the shared one)."""
    with EmbeddedRedis() as embedded:
        yield embedded


async def test_a_flushed_redis_is_told_as_a_reset_not_as_a_forgery(
    microsoft: FakeMicrosoft, fake_slack: FakeSlack, serve_app: Callable[..., Any], own_redis: EmbeddedRedis
) -> None:
    settings = microsoft_settings(microsoft) | {"itdr_approvers": f"{APPROVER},U111", "redis_url": own_redis.url,
                                                "itdr_state_secret": STATE_SECRET}
    consent = Consent(serve_app, fake_slack, settings)
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    card = await consent.card()
    _, payload = await consent.click(card, "consent-approve", user=APPROVER)
    approved = await consent.card(count=2)
    state = parse_qs(urlsplit(grant_url(approved)).query)["state"][0]
    from bot.runtime import Runtime

    async with Runtime.open(load_settings(_env_file=None, redis_url=own_redis.url), Mode.CLI) as runtime:
        assert await runtime.state_reset() is None
        client = aioredis.Redis.from_url(own_redis.url)
        try:
            await client.flushall()  # a failover to an empty replica
        finally:
            await client.aclose()
        reset = await runtime.state_reset()  # the check an ops alert calls
        assert reset is not None and runtime.epoch is not None and reset.started_at > runtime.epoch.started_at
    _, payload = await consent.click(approved, "consent-verify", user=APPROVER)
    told = (await fake_slack.answer_at(payload["response_url"]))["text"]
    assert "state was reset on" in told and "open consent requests and watched tenants are gone" in told
    page = await consent.callback(admin_consent="True", tenant=tenant.tenant_id, state=state)
    assert "state was reset on" in page.text and "not issued by itdr" not in page.text


async def test_a_redis_that_may_evict_is_warned_about_at_start(
    own_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.runtime import Runtime

    client = aioredis.Redis.from_url(own_redis.url)
    try:
        await client.config_set("maxmemory-policy", "allkeys-lru")
    finally:
        await client.aclose()
    settings = load_settings(_env_file=None, slack_bot_token="xoxb-t", slack_signing_secret="s",
                             redis_url=own_redis.url)
    with caplog.at_level(logging.WARNING):
        for mode in (Mode.HTTP, Mode.SOCKET, Mode.WORKER):
            caplog.clear()
            async with Runtime.open(settings, mode):
                pass
            warnings = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
            assert len(warnings) == 1 and "allkeys-lru" in warnings[0] and "noeviction" in warnings[0]


async def test_outsiders_cannot_flood_the_audit_trail_and_markers_expire(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    tenant = tenant_at(microsoft, "v5")
    await consent.ask(f"consent {tenant.tenant_id}")
    card = await consent.card()
    for action in ("consent-deny", "consent-approve"):
        for _ in range(15):
            _, payload = await consent.click(card, action, user=OUTSIDER)
        assert "Only the configured approvers" in (await fake_slack.answer_at(payload["response_url"]))["text"]
    trail = await consent.trail(redis_url, redis_prefix, tenant.tenant_id)
    assert 1 <= trail.count("refused") <= 10
    await consent.click(card, "consent-approve", user=APPROVER)
    await consent.card(count=2)
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        unbounded = [key for key in keys if await client.type(key) == b"string" and await client.ttl(key) == -1
                     and not key.endswith(b":epoch")]
    finally:
        await client.aclose()
    assert unbounded == [], "every consent key has a bounded life"


async def test_check_in_slack_offers_start_consent_not_the_raw_link_and_a_double_click_posts_one_card(
    consent: Consent, microsoft: FakeMicrosoft, fake_slack: FakeSlack
) -> None:
    tenant = tenant_at(microsoft, "v5")  # lacks a v6 permission: its fix is an admin consent
    response, form = await consent.slack.command(f"check {tenant.tenant_id}", user=APPROVER, channel="C111")
    assert response.status_code == 200
    report = await fake_slack.answer_at(form["response_url"], within=20)
    assert "adminconsent" not in json.dumps(report), "the approvers' workflow, not the raw link"
    start = find_button(report["blocks"], "consent-start")
    assert start["text"]["text"] == "Start consent"
    fake_slack.delay("chat.postMessage", 1.5)
    clicks = await asyncio.gather(*(consent.slack.click("consent-start", start["value"], block_id="b", user=APPROVER,
                                                        channel="C111") for _ in range(2)))
    answers = [await fake_slack.answer_at(payload["response_url"], within=20) for _, payload in clicks]
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    assert sorted(answer["text"].split(" ")[0] for answer in answers) == ["A", "Posted"]


async def test_watch_watching_fleet_and_drift_never_ping_or_link_for_a_tenant_named_so(
    slack: SlackSim, fake_slack: FakeSlack, microsoft: FakeMicrosoft, store: DriftStore
) -> None:
    scenario, drift, _ = await drift_card(slack, fake_slack, microsoft, store, EVIL)  # watched, then drifted
    response, form = await slack.command(f"watch {scenario.tenant_id}")  # again: "already watched"
    answer = await fake_slack.answer_at(form["response_url"], within=20)
    assert "already watched" in answer["text"]
    assert_inert(answer)
    (confirmation,) = fake_slack.calls_to("chat.postMessage")[:1]
    assert_inert(confirmation.args)
    for text in ("watching", "fleet"):
        response, _ = await slack.command(text)
        assert response.status_code == 200
        if text == "watching":
            assert_inert(response.json())
    assert_inert(drift)
