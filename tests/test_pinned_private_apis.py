"""The two private pieces of our dependencies the app still leans on, with no public seam to use instead. Their
versions are pinned (pyproject.toml ranges, constraints.txt); these tests fail loudly when an upgrade changes
their shape, before a user meets it.

- Bolt's `build_async_context` (slack_bolt.request.async_internals): `bot.http_guard` re-reads a slash command
  whose text mentions "payload", which Bolt misparses as interactivity, and must rebuild the context Bolt would.
- SAQ's `RedisQueue._cleanup_script`: `bot.drift.sweep.PatientQueue` registers its own sweep script there, which
  SAQ's `sweep` then runs instead of registering its own.
(Bolt's private `_build_message` is no longer used: `PooledRespond` sends through slack_sdk's public webhook API.)
"""

from __future__ import annotations

import inspect

from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context


def test_bolt_build_async_context_still_builds_a_slash_commands_context() -> None:
    assert list(inspect.signature(build_async_context).parameters) == ["context", "body"]
    form = {"command": "/itdr", "text": "search payload", "user_id": "U111", "channel_id": "C111",
            "team_id": "T111", "response_url": "https://hooks.slack.com/commands/T111/1/x"}
    context = build_async_context(AsyncBoltContext(), form)
    assert (context.user_id, context.channel_id, context.team_id) == ("U111", "C111", "T111")
    assert context.response_url == form["response_url"]


def test_saq_sweep_still_runs_the_script_registered_as_cleanup_script() -> None:
    from saq.queue.redis import RedisQueue

    sweep = inspect.getsource(RedisQueue.sweep)
    assert "self._cleanup_script" in sweep, "SAQ's sweep no longer uses _cleanup_script: PatientQueue's is ignored"
    assert "_cleanup_script = None" in inspect.getsource(RedisQueue.__init__) or \
        "_cleanup_script" in inspect.getsource(RedisQueue), "SAQ renamed its sweep script attribute"
