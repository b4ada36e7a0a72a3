"""Tenant input validation: what a user types in Slack never reaches a URL unchecked."""

from __future__ import annotations

import pytest

from bot.microsoft import InvalidTenant, TenantRef, parse_tenant


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72F988BF-86F1-41AF-91AB-2D7CD011DB47", TenantRef("72f988bf-86f1-41af-91ab-2d7cd011db47", "guid")),
        ("  contoso.onmicrosoft.com ", TenantRef("contoso.onmicrosoft.com", "domain")),
        ("Contoso.COM", TenantRef("contoso.com", "domain")),
        ("contoso.com.", TenantRef("contoso.com", "domain")),
        ("sub-1.contoso.co.uk", TenantRef("sub-1.contoso.co.uk", "domain")),
        ("xn--bcher-kva.example", TenantRef("xn--bcher-kva.example", "domain")),
        ("<http://contoso.onmicrosoft.com|contoso.onmicrosoft.com>", TenantRef("contoso.onmicrosoft.com", "domain")),
    ],
)
def test_accepts_guids_and_domains(text: str, expected: TenantRef) -> None:
    assert parse_tenant(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "contoso",  # no dot
        "common",
        "organizations",
        "x' or 1 eq 1",
        "contoso.com' or appId eq '1",
        "contoso.com/../../common",
        "..",
        "contoso..com",
        "contoso.com/x",
        "contoso.com\\x",
        "conto so.com",
        '"contoso.com"',
        "contoso.com?x=1",
        "contoso.com#frag",
        "contoso.com%2F..",
        "contoso.com\nevil.com",
        "contoso.com\x00",
        "соntoso.com",  # Cyrillic "с" and "о"
        "contoso\u200b.com",  # zero-width space
        "contoso\u3002com",  # ideographic full stop
        "ｃｏｎｔｏｓｏ.com",  # full-width letters
        "\u202econtoso.com",  # right-to-left override
        "-contoso.com",
        "contoso-.com",
        "192.168.0.1",
        "a" * 64 + ".com",  # label over 63
        ".".join(["a" * 60] * 5),  # over 253
        "x" * 600,
        "72f988bf-86f1-41af-91ab-2d7cd011db4",  # short GUID
        "{72f988bf-86f1-41af-91ab-2d7cd011db47}x",
        "https://login.microsoftonline.com/contoso.com",
        "<https://evil.example/|contoso.com> extra",
    ],
)
def test_rejects_everything_else_with_a_friendly_message(text: str) -> None:
    with pytest.raises(InvalidTenant) as info:
        parse_tenant(text)
    assert "tenant ID" in info.value.message
    # Always the same text: the input is never echoed back (it could carry Slack markup or mentions).
    with pytest.raises(InvalidTenant) as other:
        parse_tenant("<!channel>")
    assert info.value.message == other.value.message


def test_invalid_tenant_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_tenant("nope")
