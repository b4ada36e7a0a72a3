"""`./run` and `./test` themselves: the shared .venv set-up (scripts/venv.sh) and ./test's checks before it runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for the system Python: the version check passes, `-m venv .venv` (slowly) makes a .venv whose python
# logs each pip run and takes a while over it, like a real first install.
FAKE_SYSTEM_PYTHON = """#!/usr/bin/env bash
if [ "$1 $2 $3" = "-m venv .venv" ]; then
    echo venv >>"$FAKE_LOG"
    sleep 0.3
    mkdir -p .venv/bin
    cp "$FAKE_VENV_PYTHON" .venv/bin/python
    exit 0
fi
exit 0
"""
FAKE_VENV_PYTHON = """#!/usr/bin/env bash
echo "$*" >>"$FAKE_LOG"
sleep 0.4
"""


@pytest.mark.skipif(shutil.which("flock") is None, reason="no flock(1): the fake Python cannot take the fallback lock")
def test_concurrent_first_runs_install_once(tmp_path: Path) -> None:
    # `./run` and `./test` started together on a fresh clone: one creates .venv and installs, the other waits for
    # it and then finds the install done (no second `python -m venv`, no second pip run over the same log).
    checkout = tmp_path / "clone"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "venv.sh", checkout / "scripts" / "venv.sh")
    shutil.copy(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("python3.13", "python3.12", "python3.11", "python3"):  # shadow every Python find_python tries
        (fake_bin / name).write_text(FAKE_SYSTEM_PYTHON)
        (fake_bin / name).chmod(0o755)
    venv_python = tmp_path / "venv-python"
    venv_python.write_text(FAKE_VENV_PYTHON)
    venv_python.chmod(0o755)
    log = tmp_path / "log"
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "FAKE_LOG": str(log), "FAKE_VENV_PYTHON": str(venv_python)}
    # Each run then checks that the lock is not left open for the command that follows (./run execs itdr).
    script = 'source scripts/venv.sh; ensure_venv test; [ ! -e "/proc/$$/fd/9" ] || { echo "lock held" >&2; exit 9; }'
    runs = [
        subprocess.Popen(["bash", "-c", script], cwd=checkout, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [run.communicate(timeout=20)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    lines = log.read_text().splitlines()
    assert lines.count("venv") == 1, lines
    installs = [line for line in lines if "install" in line and "-e" in line]
    assert installs == ["-m pip install --quiet --disable-pip-version-check -e .[test]"], lines
    assert sum("Waiting for another ./run or ./test" in err for err in errors) == 1, errors
    assert (checkout / ".venv" / ".installed-test").is_file()
    assert (checkout / ".venv.lock").exists()


def _venv_ready() -> bool:
    """./test would otherwise install .venv first (minutes): these tests run where ./test already did."""
    stamp = ROOT / ".venv" / ".installed-test"
    if not stamp.is_file():
        return False
    # scripts/venv.sh stamps the hash of pyproject.toml followed by constraints.txt
    wanted = (ROOT / "pyproject.toml").read_bytes()
    if (ROOT / "constraints.txt").is_file():
        wanted += (ROOT / "constraints.txt").read_bytes()
    return hashlib.sha256(wanted).hexdigest() == stamp.read_text().strip()


@pytest.mark.skipif(not _venv_ready(), reason=".venv is not set up by ./test in this checkout")
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0"),
        ("redis://:s3cret@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        ("unix:///nonexistent/redis.sock?db=0&password=s3cret", "unix:///nonexistent/redis.sock?db=0&password=***"),
    ],
)
def test_an_unreachable_redis_url_stops_test_at_the_start(url: str, shown: str) -> None:
    # Before, ./test ran ruff and pytest against it and failed part way through, test after test.
    env = {**os.environ, "REDIS_URL": url}
    result = subprocess.run([str(ROOT / "test"), "--collect-only", "-q"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stdout == ""  # nothing ran: no ruff, no pytest
    [line] = result.stderr.splitlines()
    assert line.startswith(f"./test: REDIS_URL={shown} does not answer (")
    assert line.endswith("); unset it to use the local or embedded server")
    assert "s3cret" not in line
