# Sourced by ./run and ./test: make sure .venv exists and holds this project with the given extras.
# Re-installs only when pyproject.toml or constraints.txt (the tested versions of every dependency) changed since
# the last install, so repeated runs start fast.
set -euo pipefail

find_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "itdr-bot needs Python 3.11 or newer on PATH (found none)." >&2
    return 1
}

# ./run and ./test started together on a fresh clone would both create .venv and install into it, over one
# install log. A lock on .venv.lock (beside .venv, which may not exist yet) serialises them: the second waits,
# then finds the install done. It is held only while checking and installing, never by the command that follows
# (the subshell closes it).
ensure_venv() {
    (
        _lock_venv
        _install_venv "$1"
    ) 9>>.venv.lock
}

_lock_venv() {
    if command -v flock >/dev/null 2>&1; then
        flock -n 9 && return 0
        echo "Waiting for another ./run or ./test to finish setting up .venv..." >&2
        flock 9
    else  # no util-linux (macOS): the same flock(2), taken by Python on the inherited descriptor
        "$(find_python)" -c 'import fcntl; fcntl.flock(9, fcntl.LOCK_EX)'
    fi
}

_install_venv() {
    local extras="$1"
    local stamp=".venv/.installed-${extras:-base}"
    if [ ! -x .venv/bin/python ]; then
        echo "Creating .venv (first run only)..." >&2
        "$(find_python)" -m venv .venv
    fi
    local want
    want="$({ cat pyproject.toml; if [ -f constraints.txt ]; then cat constraints.txt; fi; } | sha256sum | cut -d' ' -f1)"
    # The tested versions: a new release of a dependency cannot change behaviour under a user.
    local constraints=()
    if [ -f constraints.txt ]; then constraints=(-c constraints.txt); fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "Installing itdr-bot${extras:+ [$extras]} into .venv (log: .venv/install.log)..." >&2
        # pip's chatter goes to the log; it is shown only when the install fails.
        if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip &&
            .venv/bin/python -m pip install --quiet --disable-pip-version-check ${constraints[@]+"${constraints[@]}"} \
                -e ".${extras:+[$extras]}"; } \
            >.venv/install.log 2>&1; then
            cat .venv/install.log >&2
            echo "Installing itdr-bot failed (see above)." >&2
            return 1
        fi
        echo "$want" >"$stamp"
    fi
}
