"""Tokens from the fake Entra ID through real msal over HTTPS."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import certifi
import pytest

from bot.microsoft import (
    AppNotInTenant,
    BadClientSecret,
    ConfigurationError,
    ConsentRequired,
    InvalidTenant,
    MicrosoftClients,
    MissingServicePrincipal,
    Resource,
    TenantNotFound,
    TokenError,
    TokenProvider,
    TransportError,
    track_round_trips,
)
from tests.fakes.microsoft import ConnectProxy, FakeMicrosoft, TenantScenario, running_fake

TENANT_A = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
TENANT_B = "9a7b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMicrosoft]:
    with running_fake() as fake:
        fake.add_tenant(TenantScenario(TENANT_A, domains=["contoso.onmicrosoft.com", "contoso.com"]))
        fake.add_tenant(TenantScenario(TENANT_B, domains=["fabrikam.onmicrosoft.com"], display_name="Fabrikam"))
        yield fake


@pytest.fixture
async def ms(fake: FakeMicrosoft) -> AsyncIterator[MicrosoftClients]:
    fake.clear()
    clients = MicrosoftClients(fake.settings())
    yield clients
    await clients.aclose()


def scenario(fake: FakeMicrosoft, **kwargs: object) -> str:
    """A fresh tenant with the given knobs; returns its id."""
    tid = str(uuid.uuid4())
    fake.add_tenant(TenantScenario(tid, domains=[f"t{tid[:8]}.onmicrosoft.com"], **kwargs))  # type: ignore[arg-type]
    return tid


async def test_token_with_client_secret(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    token = await ms.tokens.get_token(TENANT_A, Resource.GRAPH)
    assert token.startswith("fake.")
    [request] = fake.token_requests()
    assert request.path == f"/{TENANT_A}/oauth2/v2.0/token"


async def test_token_with_certificate_signed_assertion(fake: FakeMicrosoft) -> None:
    fake.clear()
    clients = MicrosoftClients(fake.settings(certificate=True))
    try:
        # The fake verifies the RS256 signature and the x5t thumbprint we computed from the PEM.
        assert (await clients.tokens.get_token(TENANT_A, "exchange")).startswith("fake.")
    finally:
        await clients.aclose()
    assert len(fake.token_requests()) == 1


async def test_certificate_file_must_hold_key_and_certificate(fake: FakeMicrosoft, tmp_path: Path) -> None:
    only_cert = tmp_path / "cert-only.pem"
    pem = fake.client_certificate_path.read_text()
    only_cert.write_text(pem[pem.index("-----BEGIN CERTIFICATE-----") :])
    provider = TokenProvider(fake.settings(certificate=True, itdr_client_certificate=only_cert))
    with pytest.raises(ConfigurationError, match="private key and a PEM certificate"):
        await provider.get_token(TENANT_A, "graph")


def test_missing_credentials_stop_the_start_with_one_line(fake: FakeMicrosoft) -> None:
    from bot.settings import ConfigError, load_settings

    with pytest.raises(ConfigError) as exc:
        load_settings(_env_file=None, itdr_client_id=fake.client_id)
    assert str(exc.value) == ("ITDR_CLIENT_SECRET or ITDR_CLIENT_CERTIFICATE is not set; the readiness check "
                              "needs one of them with ITDR_CLIENT_ID")


async def test_cached_token_is_not_requested_again(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    first = await ms.tokens.get_token(TENANT_A, Resource.GRAPH)
    with track_round_trips() as trips:
        again = [await ms.tokens.get_token(TENANT_A, Resource.GRAPH) for _ in range(3)]
    assert again == [first] * 3
    assert trips.token_requests == 0
    assert len(fake.token_requests()) == 1
    # A different resource is a different token (and scope).
    await ms.tokens.get_token(TENANT_A, Resource.EXCHANGE)
    scopes = [r.path for r in fake.token_requests()]
    assert len(scopes) == 2


async def test_concurrent_callers_share_one_token_request(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    fake.latency = 0.05
    try:
        tokens = await asyncio.gather(*(ms.tokens.get_token(TENANT_B, "graph") for _ in range(10)))
    finally:
        fake.latency = 0.0
    assert len(set(tokens)) == 1
    assert len(fake.token_requests()) == 1
    assert len(fake.recorded("login", path="openid-configuration")) == 1


async def test_each_tenant_gets_its_own_authority(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    await ms.tokens.get_token(TENANT_A, "graph")
    await ms.tokens.get_token("fabrikam.onmicrosoft.com", "graph")
    discovery = [r.path for r in fake.recorded("login", path="openid-configuration")]
    assert discovery == [
        f"/{TENANT_A}/v2.0/.well-known/openid-configuration",
        "/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration",
    ]
    # A domain authority ends at the tenant's GUID token endpoint, as with real Entra ID.
    assert [r.path for r in fake.token_requests()] == [
        f"/{TENANT_A}/oauth2/v2.0/token",
        f"/{TENANT_B}/oauth2/v2.0/token",
    ]
    assert await ms.tokens.tenant_id("fabrikam.onmicrosoft.com") == TENANT_B
    # No instance discovery against the real login.microsoftonline.com for a custom authority host.
    assert not fake.recorded("login", path="discovery/instance")


async def test_few_msal_apps_serve_many_tenants_without_rediscovery(fake: FakeMicrosoft) -> None:
    fake.clear()
    provider = TokenProvider(fake.settings(), max_apps=1)
    try:
        first = await provider.get_token(TENANT_A, "graph")
        await provider.get_token(TENANT_B, "graph")  # A's msal app is evicted
        assert await provider.get_token(TENANT_A, "graph") == first  # its token is still good: no request
        provider.forget(TENANT_A)  # e.g. right after consent: a new token must carry the new roles
        await provider.get_token(TENANT_A, "graph")
    finally:
        provider.close()
    # The app is rebuilt from the cached discovery document: one discovery per tenant, however often evicted.
    assert len(fake.recorded("login", path="openid-configuration")) == 2
    assert len(fake.token_requests()) == 3


async def test_a_warm_token_stays_on_the_event_loop(fake: FakeMicrosoft, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TokenProvider(fake.settings())
    try:
        await provider.get_token(TENANT_A, "graph")
        hops: list[object] = []
        real = asyncio.to_thread

        async def counting(*args: object, **kwargs: object) -> object:
            hops.append(args[0])
            return await real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(asyncio, "to_thread", counting)
        for _ in range(100):
            await provider.get_token(TENANT_A, "graph")
        assert hops == [], "a cached token costs no thread hop"
    finally:
        provider.close()


@pytest.mark.parametrize(
    ("knobs", "error", "code"),
    [
        ({"app_in_tenant": False}, AppNotInTenant, 700016),
        ({"token_error": 7000229}, MissingServicePrincipal, 7000229),
        ({"token_error": 65001}, ConsentRequired, 65001),
        ({"token_error": 7000222}, BadClientSecret, 7000222),
        ({"token_error": 50058}, TokenError, 50058),
    ],
)
async def test_aadsts_codes_become_typed_errors(
    ms: MicrosoftClients, fake: FakeMicrosoft, knobs: dict[str, object], error: type[TokenError], code: int
) -> None:
    tid = scenario(fake, **knobs)
    with pytest.raises(error) as info:
        await ms.tokens.get_token(tid, "graph")
    assert type(info.value) is error
    assert info.value.aadsts == code
    assert info.value.tenant == tid
    assert info.value.correlation_id


async def test_unknown_tenant_is_tenant_not_found(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    # msal's constructor fails OIDC discovery with a ValueError; we turn it into TenantNotFound.
    with pytest.raises(TenantNotFound, match=re.escape("doesn't know the tenant `nobody.onmicrosoft.com`")) as info:
        await ms.tokens.get_token("nobody.onmicrosoft.com", "graph")
    assert info.value.aadsts == 90002
    assert not fake.token_requests()


async def test_bad_secret_is_our_problem_not_the_customers(fake: FakeMicrosoft) -> None:
    clients = MicrosoftClients(fake.settings(itdr_client_secret="wrong-secret"))
    try:
        with pytest.raises(BadClientSecret, match="bot's configuration") as info:
            await clients.tokens.get_token(TENANT_A, "graph")
    finally:
        await clients.aclose()
    assert info.value.aadsts == 7000215


async def test_secret_and_tokens_never_logged_or_in_errors(
    fake: FakeMicrosoft, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = fake.client_secret
    clients = MicrosoftClients(fake.settings())
    try:
        token = await clients.tokens.get_token(TENANT_A, "graph")
        await clients.graph(TENANT_A).get("/organization")
        tid = scenario(fake, token_error=7000229)
        with pytest.raises(TokenError) as info:
            await clients.tokens.get_token(tid, "graph")
    finally:
        await clients.aclose()
    wrong = MicrosoftClients(fake.settings(itdr_client_secret="Sup3r-Secret~value"))
    try:
        with pytest.raises(BadClientSecret) as bad:
            await wrong.tokens.get_token(TENANT_A, "graph")
    finally:
        await wrong.aclose()
    assert caplog.records, "expected debug logging to be captured"
    for text in (caplog.text, str(info.value), repr(vars(info.value)), str(bad.value), repr(vars(bad.value))):
        assert secret not in text
        assert "Sup3r-Secret~value" not in text
        assert token not in text


async def test_malicious_tenant_rejected_before_any_request(ms: MicrosoftClients, fake: FakeMicrosoft) -> None:
    for text in ("x' or 1 eq 1", "contoso.com/../common", "соntoso.com"):
        with pytest.raises(InvalidTenant):
            await ms.tokens.get_token(text, "graph")
        with pytest.raises(InvalidTenant):
            await ms.graph(text).get("/organization")
        with pytest.raises(InvalidTenant):
            await ms.exchange.invoke(text, "Get-OrganizationConfig")
    assert fake.recorded(in_batch=None) == []


async def test_untrusted_ca_fails_for_msal_and_httpx(fake: FakeMicrosoft, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the fake CA removed from SSL_CERT_FILE/REQUESTS_CA_BUNDLE, both stacks must refuse the
    # fake's certificate: proof that the variables are what makes the other tests pass.
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, certifi.where())
    clients = MicrosoftClients(fake.settings())
    try:
        with pytest.raises(TransportError):
            await clients.tokens.get_token(TENANT_A, "graph")
        with pytest.raises(TransportError):
            await clients.http.send_once("GET", f"{fake.url('graph')}/v1.0/organization", service="graph")
    finally:
        await clients.aclose()


async def test_https_proxy_is_honoured(fake: FakeMicrosoft, monkeypatch: pytest.MonkeyPatch) -> None:
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        clients = MicrosoftClients(fake.settings())
        try:
            await clients.graph(TENANT_A).get("/organization")
        finally:
            await clients.aclose()
    login, graph = f"127.0.0.1:{fake.ports['login']}", f"127.0.0.1:{fake.ports['graph']}"
    assert login in proxy.tunnels  # msal (requests)
    assert graph in proxy.tunnels  # httpx
