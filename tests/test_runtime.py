"""One runtime per process, settings validated once, and every process it starts stops with it.

These run the real `itdr` entry points as subprocesses, as an operator would, and look at what is left behind.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from bot.logging import redact
from bot.settings import ConfigError, Mode, load_settings
from bot.store import RedisConnections, StateUnavailable
from tests.ports import unused_port

ROOT = Path(__file__).resolve().parents[1]
ITDR = [sys.executable, "-m", "bot.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new operator: no Slack, Microsoft or Redis settings, no .env (cwd is a temp dir)."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "ITDR_", "REDIS_", "LOG_LEVEL", "PORT"))}
    return keep | {"PYTHONPATH": str(ROOT)} | extra


def redis_children(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if "redis-server" in p.name()]
    except psutil.NoSuchProcess:
        return []


def wait_gone(processes: list[psutil.Process], within: float = 10) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=within)
    return alive


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


# ----------------
#  settings
# ----------------


class TestSettings:
    @pytest.mark.parametrize(
        ("argv", "env", "line"),
        [
            (["console"], {"ITDR_CLIENT_ID": "abc"},
             "itdr: ITDR_CLIENT_ID is malformed: expected an application (client) id, a GUID like "
             "00000000-0000-0000-0000-000000000000"),
            (["check", "contoso.onmicrosoft.com"], {"ITDR_CHECK_TTL_SECONDS": "x"},
             "itdr: ITDR_CHECK_TTL_SECONDS is malformed: expected a whole number"),
            (["check", "contoso.onmicrosoft.com"], {"REDIS_URL": "redis://127.0.0.1:abc"},
             "itdr: REDIS_URL is malformed: expected redis://HOST[:PORT][/DB], rediss://… or unix:///PATH"),
            (["serve"], {"REDIS_URL": "notascheme://x", "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"},
             "itdr: REDIS_URL is malformed: expected redis://HOST[:PORT][/DB], rediss://… or unix:///PATH"),
            (["serve"], {"SLACK_BOT_TOKEN": "xoxb-1"},
             "itdr: SLACK_SIGNING_SECRET is not set; it is required for `itdr serve` (HTTP mode)"),
            (["socket"], {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-not-an-app-token"},
             "itdr: SLACK_APP_TOKEN is malformed: it must be an app-level token starting with 'xapp-'"),
            (["console"], {"ITDR_CLIENT_ID": "66666666-7777-8888-9999-000000000000"},
             "itdr: ITDR_CLIENT_SECRET or ITDR_CLIENT_CERTIFICATE is not set; the readiness check needs one of "
             "them with ITDR_CLIENT_ID"),
            (["console"], {"LOG_LEVEL": "loud"},
             "itdr: LOG_LEVEL is malformed: input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
        ],
    )
    def test_a_bad_value_is_one_line_naming_the_variable(
        self, workdir: Path, argv: list[str], env: dict[str, str], line: str
    ) -> None:
        result = subprocess.run([*ITDR, *argv], env=clean_env(**env), cwd=workdir, capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL, check=False)
        assert result.returncode == 2
        assert result.stderr == line + "\n"  # one line, no traceback, no value

    def test_log_level_is_any_case(self) -> None:
        assert load_settings(_env_file=None, log_level="debug").log_level == "DEBUG"

    def test_every_secret_is_registered_with_the_redactor(self) -> None:
        load_settings(_env_file=None, itdr_client_id="66666666-7777-8888-9999-000000000000",
                      itdr_client_secret="Ms~client-secret-4711", slack_signing_secret="signing-secret-0815",
                      redis_url="redis://:redis-pass-99@127.0.0.1:6379/0")
        line = redact("Ms~client-secret-4711 signing-secret-0815 redis://:redis-pass-99@host")
        assert "4711" not in line and "0815" not in line and "pass-99" not in line

    def test_modes_name_what_they_need(self) -> None:
        with pytest.raises(ConfigError, match="SLACK_APP_TOKEN is not set"):
            load_settings(Mode.SOCKET, _env_file=None, slack_bot_token="xoxb-1")
        assert load_settings(Mode.CONSOLE, _env_file=None).slack_bot_token is None


# ----------------
#  Redis: a cache that fails open, state that fails closed
# ----------------


class TestRedisRoles:
    async def test_cache_fails_open_and_state_fails_closed(self) -> None:
        redis = RedisConnections("redis://127.0.0.1:1/0", "itdr-test:")  # nothing listens there
        try:
            assert await redis.cache.get_json("anything") is None
            assert await redis.cache.claim("delivery", "x") is True  # handled as if it were the first
            await redis.cache.set_json("anything", {"a": 1}, 60)  # no exception
            with pytest.raises(StateUnavailable) as exc:
                async with redis.state.guard("record the approval") as client:
                    await client.set(redis.state.key("approval"), "1")
            assert str(exc.value).startswith("Redis is unreachable, so I cannot record the approval right now.")
        finally:
            await redis.aclose()

    async def test_state_round_trips_on_a_live_redis(self, redis_url: str, redis_prefix: str) -> None:
        redis = RedisConnections(redis_url, redis_prefix)
        try:
            async with redis.state.guard("write") as client:
                await client.set(redis.state.key("k"), "v")
                assert await client.get(redis.state.key("k")) == b"v"
        finally:
            await redis.aclose()


# ----------------
#  processes stop with the process
# ----------------




@pytest.fixture
def serve_without_redis(workdir: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """`itdr serve` with no REDIS_URL (so it starts an embedded Redis), ready to answer /healthz."""
    port = unused_port()
    log = workdir / "serve.log"
    # TMPDIR: the embedded server's folder is made in the test's own directory, so a SIGKILLed serve (which cannot
    # remove it) leaves nothing behind.
    env = clean_env(SLACK_BOT_TOKEN="xoxb-runtime-test", SLACK_SIGNING_SECRET="runtime-test-secret",
                    SLACK_API_URL="http://127.0.0.1:9/api/", TMPDIR=str(workdir))
    with log.open("w") as out:
        proc = subprocess.Popen([*ITDR, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=workdir,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/healthz", timeout=1).json() == {"ok": True, "redis": "up"}:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield proc, base, log
    finally:
        if proc.poll() is None:
            for child in redis_children(proc.pid):
                child.kill()
            proc.kill()
            proc.wait(10)


class TestNothingIsLeftRunning:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_serve_stops_its_embedded_redis(self, serve_without_redis, signum: int) -> None:
        proc, _, log = serve_without_redis
        servers = redis_children(proc.pid)
        assert len(servers) == 1
        proc.send_signal(signum)
        proc.wait(20)
        assert wait_gone(servers) == [], "the embedded redis-server outlived `itdr serve`"
        text = log.read_text()
        assert text.count("REDIS_URL is not set") == 1, "warned once that state will not survive a restart"
        assert "will be unused" not in text, "Bolt's token notice is not printed"
        assert "Traceback" not in text

    def test_a_killed_serve_takes_its_embedded_redis_along(self, serve_without_redis) -> None:
        proc, _, _ = serve_without_redis
        servers = redis_children(proc.pid)
        proc.kill()  # no cleanup code runs at all
        proc.wait(10)
        assert wait_gone(servers) == [], "the parent-death signal did not stop the embedded redis-server"

    def test_console_quit_and_end_of_input_leave_nothing(self, workdir: Path) -> None:
        for stdin in ("why Mail.ReadWrite\nquit\n", "versions\n"):
            proc = subprocess.Popen([*ITDR, "console"], env=clean_env(), cwd=workdir, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)
            servers = redis_children(proc.pid)
            out, err = proc.communicate(stdin, timeout=60)
            assert proc.returncode == 0, err
            assert "[only you can see this]" in out
            assert wait_gone(servers) == []

    def test_ctrl_c_at_the_prompt_leaves_at_once(self, workdir: Path) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the console on a real terminal
            os.chdir(workdir)
            os.execve(sys.executable, [*ITDR, "console"], clean_env() | {"TERM": "dumb"})
        try:
            output = b""
            deadline = time.monotonic() + 30
            while b"itdr> " not in output:
                assert time.monotonic() < deadline, output
                if select.select([fd], [], [], 0.5)[0]:
                    output += os.read(fd, 4096)
            servers = redis_children(pid)
            os.write(fd, b"\x03")  # Ctrl-C, as the terminal sends it: SIGINT to the console, no Enter
            started = time.monotonic()
            while True:
                finished, status = os.waitpid(pid, os.WNOHANG)
                if finished:
                    break
                assert time.monotonic() - started < 5, "Ctrl-C did not leave the console"
                if select.select([fd], [], [], 0.1)[0]:
                    with contextlib.suppress(OSError):  # the terminal closes as the console ends
                        os.read(fd, 4096)
            assert os.waitstatus_to_exitcode(status) == 0
            assert wait_gone(servers) == []
        finally:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(fd)


# ----------------
#  layering
# ----------------


def test_a_worker_can_import_the_block_builders_without_bolt() -> None:
    code = (
        "import sys, handlers.blocks.check, handlers.blocks.answers, handlers.blocks.home\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('slack_bolt', 'handlers.commands', "
        "'handlers.actions', 'handlers.events')))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
