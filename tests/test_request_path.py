"""The slash-command request path made cheaper (issue 7, item 6) without changing what it does.

Each test pins one of the changes measured with `bench/slack_roundtrip.py`: the same suggestions, the same dedup
command, the same headers for Bolt, the same cleaned text, no function middleware, a frozen start-up heap.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
import redis.asyncio as aioredis
from rapidfuzz import fuzz, process
from slack_bolt.middleware.async_custom_middleware import AsyncCustomMiddleware
from starlette.requests import Request

import bot.server
from bot.http_guard import to_bolt_request
from bot.settings import Mode
from bot.store import RedisConnections
from catalog import Catalog, load_catalog
from catalog.store import MAX_SUGGESTIONS, SUGGESTION_CUTOFF, _compact, _expand, normalize
from handlers.blocks.kit import clean
from handlers.router import parse_command, render, render_command
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_client import SlackSim
from tests.fakes.slack_fixtures import ServedApp, slack_settings

catalog = load_catalog()


def reference_suggest(catalog: Catalog, query: str, limit: int = MAX_SUGGESTIONS) -> list[str]:
    """The suggestion rule as first written: processors run on every name and alias, for every query."""
    choices = {name: item for item in catalog.items for name in (item.name, *item.aliases)}
    query = normalize(query)
    expanded = _expand(query)
    scored: dict[str, float] = {}
    for scorer, text in ((fuzz.WRatio, expanded), (fuzz.ratio, _compact(query))):
        processor = (lambda s: s.lower()) if scorer is fuzz.WRatio else _compact
        for choice, score, _ in process.extract(
            text, choices.keys(), scorer=scorer, processor=processor, limit=limit * 3
        ):
            name = choices[choice].name
            scored[name] = max(scored.get(name, 0.0), score)
    ranked = sorted(
        (name for name, score in scored.items() if score >= SUGGESTION_CUTOFF), key=lambda name: (-scored[name], name)
    )
    return ranked[:limit]


def typos() -> list[str]:
    """Every name and alias lower-cased, missing a letter, with two letters swapped; loose words; nonsense."""
    queries = ["qwxz", "", "mail", "exchange admn", "mail readwite", "Ｍａｉｌ．Ｒｅａｄｗｉｔｅ", "audit log",
               "ca admin", "org branding", "policy readwrite", "user.read", "securityevents", "app", "x" * 200]
    for item in catalog.items:
        for name in (item.name, *item.aliases):
            middle = len(name) // 2
            queries += [name.lower(), name[:middle] + name[middle + 1:], name[:middle] + name[middle + 1:middle + 2]
                        + name[middle:middle + 1] + name[middle + 2:]]
    return queries


def test_suggestions_are_those_of_the_rule_as_first_written() -> None:
    queries = typos()
    assert len(queries) > 300
    for query in queries:
        assert [item.name for item in catalog.suggest(query)] == reference_suggest(catalog, query), query


def test_a_typo_is_still_answered_with_its_suggestions() -> None:
    found = catalog.lookup("mail.readwite")
    assert found.item is None
    assert [item.name for item in found.suggestions] == reference_suggest(catalog, "mail.readwite")
    assert found.suggestions[0].name == "Mail.ReadWrite"


@pytest.mark.parametrize("text", ["why mail.readwite", "why Mail.ReadWrite", "why exchange admin", "search audit",
                                  "versions", "diff v4 v5", "diff v9", "frobnicate", ""])
def test_a_memoised_slash_answer_is_the_answer_rendered_afresh(text: str) -> None:
    request, note = parse_command(text)
    first = render_command(catalog, request, note)
    assert first == render(catalog, request, note=note)
    assert render_command(catalog, *parse_command(text)) is first  # asked again: answered from the cache
    assert first == render(catalog, request, note=note)  # and nothing changed it


async def test_a_delivery_is_claimed_once_with_a_ttl(redis_url: str, redis_prefix: str) -> None:
    connections = RedisConnections(redis_url, redis_prefix)
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await connections.cache.claim("delivery", "T1", ttl=60) is True
        assert await connections.cache.claim("delivery", "T1", ttl=60) is False
        assert await connections.cache.claim("delivery", "T2", ttl=60) is True
        assert 0 < await client.ttl(f"{redis_prefix}delivery:T1") <= 60
        assert await client.get(f"{redis_prefix}delivery:T1") == b"1"
    finally:
        await client.aclose()
        await connections.aclose()


def _request(headers: list[tuple[bytes, bytes]], query: bytes = b"") -> Request:
    scope = {"type": "http", "method": "POST", "path": "/slack/events", "headers": headers, "query_string": query}
    return Request(scope)


def test_bolt_gets_every_header_value_and_the_query_string() -> None:
    request = _request(
        [(b"content-type", b"application/x-www-form-urlencoded"), (b"x-dup", b"a"), (b"x-slack-retry-num", b"1"),
         (b"x-dup", b"b")],
        b"x=1&x=2&y=%C3%A9",
    )
    bolt_request = to_bolt_request(request, b"command=%2Fitdr&text=help")
    assert bolt_request.headers["x-dup"] == ["a", "b"]
    assert bolt_request.headers["x-slack-retry-num"] == ["1"]
    assert bolt_request.headers["content-type"] == ["application/x-www-form-urlencoded"]
    assert bolt_request.query == {"x": ["1", "2"], "y": ["é"]}
    assert bolt_request.body["text"] == "help"


def test_clean_keeps_printable_text_and_line_breaks_and_drops_controls() -> None:
    plain = "Mail.ReadWrite: Microsoft Graph application permission"
    assert clean(plain) is plain
    assert clean("*Why*\nbecause") == "*Why*\nbecause"
    assert clean("a\x1b[31mb\u202ec\nd\te") == "a[31mbc\nd\te"


def test_listeners_see_no_function_middleware(serve_app: Any) -> None:
    """Bolt builds every injectable argument for a function middleware on every request; ours are objects."""
    bolt = serve_app().asgi.state.bolt
    ours = [m for m in bolt._async_middleware_list if type(m).__module__.split(".")[0] in ("bot", "handlers")]
    assert {type(m).__name__ for m in ours} == {"InjectRuntime", "DeduplicateDeliveries"}
    assert not [m for m in bolt._async_middleware_list if isinstance(m, AsyncCustomMiddleware)]


async def test_the_startup_heap_is_frozen_while_serving_and_answers_still_work(
    fake_slack: FakeSlack, redis_url: str, redis_prefix: str
) -> None:
    before = gc.get_freeze_count()
    settings = slack_settings(fake_slack, redis_url, redis_prefix, mode=Mode.HTTP)
    running = ServedApp(bot.server.create_asgi_app(settings, freeze_heap=True)).start()
    slack = SlackSim(running.events_url, fake_slack)
    try:
        assert gc.get_freeze_count() > before
        response, _ = await slack.command("why Mail.ReadWrite")
        assert response.json()["text"].startswith("Mail.ReadWrite:")
    finally:
        await slack.aclose()
        running.stop()
    assert gc.get_freeze_count() == 0


def test_itdr_serve_asks_for_the_frozen_heap(monkeypatch: pytest.MonkeyPatch, fake_slack: FakeSlack,
                                             redis_url: str, redis_prefix: str) -> None:
    asked: dict[str, Any] = {}
    monkeypatch.setattr(bot.server, "create_asgi_app", lambda settings, **options: asked.update(options))
    monkeypatch.setattr(bot.server.uvicorn, "run", lambda *args, **kwargs: None)
    bot.server.serve(slack_settings(fake_slack, redis_url, redis_prefix, mode=Mode.HTTP))
    assert asked == {"freeze_heap": True}
