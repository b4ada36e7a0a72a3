"""Issue 14, part 3: the seams a review found stay closed. Listeners and the worker call the consent service, never
its store; the admin-consent link and every Slack web URL are built in one place each; every runtime dependency is
pinned to a tested range that ./run and ./test install with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from bot.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def _sources(*folders: str) -> dict[Path, str]:
    return {path: path.read_text() for folder in folders for path in (ROOT / folder).rglob("*.py")}


def test_listeners_and_the_worker_call_the_consent_service_not_its_store() -> None:
    files = _sources("handlers") | {ROOT / "bot" / "worker.py": (ROOT / "bot" / "worker.py").read_text()}
    offenders = [str(path.relative_to(ROOT)) for path, text in files.items() if re.search(r"consent\.store\.", text)]
    assert offenders == []


def test_the_admin_consent_link_and_slack_web_urls_are_built_in_one_place() -> None:
    files = _sources("bot", "handlers")
    builds_consent_link = [str(path.relative_to(ROOT)) for path, text in files.items() if "/adminconsent?" in text
                           and "_ADMIN_CONSENT = " not in text]
    assert builds_consent_link == ["bot/microsoft/tenant.py"]
    hard_coded = [str(path.relative_to(ROOT)) for path, text in files.items() if "https://slack.com/" in text]
    assert hard_coded == ["bot/settings.py"], "SLACK_API_URL's default lives there; everything else derives"
    settings = load_settings(_env_file=None, slack_api_url="https://slack-gov.com/api/")
    assert settings.slack_web_url("archives/C1/p1") == "https://slack-gov.com/archives/C1/p1"


def test_every_runtime_dependency_is_pinned_to_a_tested_range_that_the_scripts_install() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    unbounded = [spec for spec in dependencies if "<" not in spec]
    assert unbounded == [], "each needs an upper bound"
    tested = {line.split("==")[0].lower().replace("_", "-") for line in (ROOT / "constraints.txt").read_text()
              .splitlines() if "==" in line}
    names = {re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].lower() for spec in dependencies}
    assert names - tested == set(), "constraints.txt names the tested version of each"
    assert "-c constraints.txt" in (ROOT / "scripts" / "venv.sh").read_text()
