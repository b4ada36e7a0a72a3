"""`itdr console`: the same AsyncApp and listeners, driven from text lines, buttons pressed by number."""

from __future__ import annotations

import io

from bot.console import run_console
from bot.settings import Settings


async def run_lines(lines: list[str], redis_url: str, redis_prefix: str) -> str:
    out = io.StringIO()
    settings = Settings(_env_file=None, redis_url=redis_url, redis_prefix=redis_prefix)  # type: ignore[call-arg]
    assert await run_console(settings, lines=lines, out=out) == 0
    return out.getvalue()


async def test_why_renders_as_text_with_numbered_buttons(redis_url, redis_prefix, slack_env):
    text = await run_lines(["/itdr why Mail.ReadWrite", "1", "quit"], redis_url, redis_prefix)
    assert "== Mail.ReadWrite ==" in text
    assert "[only you can see this]" in text
    assert "[1] Share in channel" in text
    assert "[posted in the channel]" in text  # pressing 1 shared it
    assert "Shared by U0CONSOLE" in text


async def test_typo_then_pick_a_suggestion(redis_url, redis_prefix, slack_env):
    text = await run_lines(["why mail.readwite", "1"], redis_url, redis_prefix)
    assert "Did you mean" in text
    assert "[1] Mail.ReadWrite" in text
    assert text.count("== Mail.ReadWrite ==") == 1


async def test_diff_in_one_answer_and_home(redis_url, redis_prefix, slack_env):
    text = await run_lines(["diff v4 v5", "1", "home", "9"], redis_url, redis_prefix)
    assert "== Changes v4 → v5 ==" in text
    assert "(page 2 of" not in text and "Show more" not in text
    assert text.index("Removed (3)") < text.index("Added (36)")
    assert "[1] Share in channel" in text
    assert "[posted in the channel]" in text  # pressing 1 shared it
    assert "[Home tab]" in text
    assert "(no button 9" in text


def test_mrkdwn_reads_as_terminal_text():
    from bot.console import plain

    rendered = plain("*Status:* Active · :warning: _Discrepancy_ <@U111> &lt;x&gt;")
    assert rendered == "Status: Active · ⚠ Discrepancy U111 <x>"
    assert plain("*Fix:* run it", bold=True) == "\033[1mFix:\033[0m run it"
    assert plain("Policy.ReadWrite.* and User.*") == "Policy.ReadWrite.* and User.*"  # names keep their stars


def test_code_spans_are_literal():
    from bot.console import plain

    # A diff's wildcards: outside a code span the two stars would read as bold and vanish.
    assert plain("*Added:* `Policy.ReadWrite.*, DeviceManagement*` and `snake_case_name`", bold=True) == (
        "\033[1mAdded:\033[0m `Policy.ReadWrite.*, DeviceManagement*` and `snake_case_name`")
    assert plain("`a &lt;b&gt;` <@U111>") == "`a <b>` U111"


async def test_answers_carry_no_raw_mrkdwn(redis_url, redis_prefix, slack_env):
    text = await run_lines(["why Mail.ReadWrite", "check not_a_tenant"], redis_url, redis_prefix)
    assert "*Status:*" not in text and ":warning:" not in text
    assert "Status: " in text and "⚠" in text
