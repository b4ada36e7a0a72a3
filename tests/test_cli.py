"""`itdr` as a user runs it: readable answers by default, stable JSON with --json, meaningful exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    code, out = run(capsys, *argv, "--json")
    return code, json.loads(out)


def test_why_json_has_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "why", "Mail.ReadWrite")
    assert code == 0
    assert isinstance(data, dict)
    for key in ("name", "api", "kind", "purpose", "status", "cpv_only", "p2_only", "introduced_in", "ids",
                "microsoft", "impact", "discrepancies"):
        assert key in data, key
    assert data["name"] == "Mail.ReadWrite"
    assert data["api"] == "graph"
    assert data["status"] == "future"
    assert data["introduced_in"] == "v4"
    assert data["ids"]["application_id"] == "e2a3a72e-5f79-4c64-b1b1-878b674786c9"
    assert data["microsoft"]["display_name"] == "Read and write mail in all mailboxes"


def test_why_a_typo_shows_the_closest_item_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "why", "mail.readwite")
    assert code == 1
    assert "Nothing in the ITDR catalog is called 'mail.readwite'. Closest match: Mail.ReadWrite." in out
    assert "Read and write mail in all mailboxes" in out  # the closest item is explained right away
    code, data = run_json(capsys, "why", "mail.readwite")
    assert code == 1
    assert data == {"error": "not_found", "query": "mail.readwite", "suggestions": data["suggestions"]}  # type: ignore[index]
    assert data["suggestions"][0] == "Mail.ReadWrite"  # type: ignore[index]


def test_why_an_unknown_word_says_so_and_points_to_search(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "why", "qwxz")
    assert code == 1
    assert "nothing is close" in out and "itdr search" in out
    assert run_json(capsys, "why", "qwxz") == (1, {"error": "not_found", "query": "qwxz", "suggestions": []})


def test_why_a_role_name_typed_loosely(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "why", "exchange", "admin")
    assert code == 0
    assert out.startswith("Exchange Administrator  ·  Microsoft Entra ID directory role")
    assert "Huntress assigns it during onboarding" in out
    assert "29232cdf-9323-42fd-ade2-1d097af3e4de" in out


def test_why_a_non_graph_permission(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "why", "ActivityFeed.Read")
    assert code == 0
    assert data["api"] == "o365_management"  # type: ignore[index]
    assert data["ids"]["resource_app_id"] == "c5393580-f805-4401-95e8-94b7a6ef2fc2"  # type: ignore[index]
    assert data["impact"]["capability"] == "log_ingest"  # type: ignore[index]


def test_why_a_cpv_only_item(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "why", "Exchange.Manage")
    assert code == 0
    assert "Office 365 Exchange Online delegated permission" in out
    assert "CPV integrations only" in out
    assert "(CPV Only)" in out  # the document's own row is quoted in the discrepancy note


def test_why_shows_the_documents_contradictions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "why", "IdentityRiskyUser.ReadWrite.All")
    assert code == 0
    assert out.startswith("IdentityRiskyUser.Read.All")
    assert "[Name mismatch] Revision v2 (09-MAY-24) adds IdentityRiskyUser.ReadWrite.All" in out
    assert "needs Entra ID P2" in out


def test_why_understands_full_width_and_invisible_characters(capsys: pytest.CaptureFixture[str]) -> None:
    # Pasted from a document typed with a CJK input method, or with a zero-width space from a web page.
    code, out = run(capsys, "why", "Ｍａｉｌ．ＲｅａｄＷｒｉｔｅ")
    assert code == 0, out
    assert out.startswith("Mail.ReadWrite  ·  Microsoft Graph application permission")
    code, data = run_json(capsys, "why", "Exchange\u3000ａｄｍｉｎ")  # ideographic space, full-width letters
    assert (code, data["name"]) == (0, "Exchange Administrator")  # type: ignore[index]
    code, data = run_json(capsys, "why", "qw\u200bxz\u202e")
    assert data == {"error": "not_found", "query": "qwxz", "suggestions": []}  # the echo carries nothing invisible


def test_search_understands_full_width_and_invisible_characters(capsys: pytest.CaptureFixture[str]) -> None:
    _, plain = run_json(capsys, "search", "phishing")
    assert plain
    assert run_json(capsys, "search", "ｐｈｉｓｈｉｎｇ") == (0, plain)
    assert run_json(capsys, "search", "ph\u200bish\u00ading") == (0, plain)  # zero-width space, soft hyphen


def test_search_ranks_items(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "search", "phishing")
    assert code == 0
    names = [entry["name"] for entry in data]  # type: ignore[union-attr]
    assert names[:2] == ["Mail.ReadBasic.All", "Mail.ReadWrite"]
    code, out = run(capsys, "search", "zzzz")
    assert code == 1 and "No item matches 'zzzz'" in out


@pytest.mark.parametrize("limit", ["0", "-1", "ten"])
def test_search_limit_below_one_is_a_usage_error(capsys: pytest.CaptureFixture[str], limit: str) -> None:
    # --limit 0 used to say nothing matches, --limit -1 silently dropped the last result.
    assert main(["search", "audit", "--limit", limit]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"itdr search: argument --limit: must be a whole number of 1 or more, not {limit!r} (see `itdr search --help`)"
    ]
    assert main(["search", "audit", "--limit", limit, "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "usage"


def test_search_limit_one_shows_the_best_match(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "search", "phishing", "--limit", "1")
    assert code == 0
    assert [entry["name"] for entry in data] == ["Mail.ReadBasic.All"]  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["", "   ", "\u200b"])
def test_why_an_empty_name_is_a_usage_error(capsys: pytest.CaptureFixture[str], name: str) -> None:
    assert main(["why", name]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("itdr why: NAME is empty")
    assert main(["why", name, "--json"]) == 2
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["error"] == "usage" and data["message"].startswith("itdr why: NAME is empty")
    assert err == ""


def test_versions_lists_six_revisions_with_iso_dates(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "versions")
    assert code == 0
    assert [(v["version"], v["date"]) for v in data] == [  # type: ignore[union-attr]
        ("v1", "2024-02-29"), ("v2", "2024-05-09"), ("v3", "2024-11-14"),
        ("v4", "2025-10-02"), ("v5", "2025-10-31"), ("v6", "2025-12-29"),
    ]
    assert data[5]["added"] == ["AppRoleAssignment.ReadWrite.All"]  # type: ignore[index]


def test_diff_defaults_to_previous_then_latest(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "diff")
    assert code == 0
    assert (data["from"], data["to"]) == ("v5", "v6")  # type: ignore[index]
    assert [item["name"] for item in data["added"]] == ["AppRoleAssignment.ReadWrite.All"]  # type: ignore[index]


def test_diff_backwards_swaps_added_and_removed(capsys: pytest.CaptureFixture[str]) -> None:
    _, forward = run_json(capsys, "diff", "v4", "v5")
    _, backward = run_json(capsys, "diff", "v5", "v4")
    assert [i["name"] for i in forward["added"]] == [i["name"] for i in backward["removed"]]  # type: ignore[index]
    assert [i["name"] for i in forward["removed"]] == [i["name"] for i in backward["added"]]  # type: ignore[index]
    names = [i["name"] for i in forward["added"] + forward["removed"]]  # type: ignore[index,operator]
    _, out = run(capsys, "diff", "v4", "v5")
    assert out.index("Removed (3)") < out.index("Added (36)"), "removed first"
    assert "  + 36 Policy.ReadWrite.*, DeviceManagement*, User.* and 12 others: (Future Use) ISPM" in out
    _, back = run(capsys, "diff", "v5", "v4")
    assert back.index("Removed (36)") < back.index("Added (3)")
    for text in (out, back):
        assert max(len(line) for line in text.splitlines()) <= 100
        for name in names:
            assert len(re.findall(rf"(?<![\w.]){re.escape(name)}(?![\w.])", text)) == 1, name


def test_unknown_revision_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "v1", "v9"]) == 2
    assert "There is no revision 'v9'" in capsys.readouterr().err


def test_manifest_is_ready_to_paste(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "manifest", "--version", "v2")
    assert code == 0
    access = json.loads(out)["requiredResourceAccess"]
    graph = next(entry for entry in access if entry["resourceAppId"] == "00000003-0000-0000-c000-000000000000")
    assert {"id": "dc5007c0-2d7d-4c42-879c-2dab87571379", "type": "Role"} in graph["resourceAccess"]


def test_the_installed_console_script_answers_end_to_end() -> None:
    script = shutil.which("itdr", path=str(Path(sys.executable).parent)) or shutil.which("itdr")
    if script is None:
        pytest.skip("the itdr console script is not installed in this environment")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLACK_")}
    result = subprocess.run([script, "why", "Mail.ReadWrite", "--json"], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "Mail.ReadWrite"


def _itdr_command() -> list[str]:
    script = shutil.which("itdr", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "bot.cli"]


@pytest.mark.parametrize(
    "argv", [["manifest"], ["diff", "v1", "v6", "--json"], ["search", "a", "--limit", "200", "--json"]], ids=" ".join
)
def test_output_piped_into_head_ends_quietly(argv: list[str]) -> None:
    # `itdr manifest | head -1`: head exits after one line; itdr must stop without a BrokenPipeError traceback.
    # The diff and the long search (over 100 KB) outgrow a pipe's buffer: itdr is still writing when head leaves.
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLACK_")}
    itdr = subprocess.Popen([*_itdr_command(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1], env=env)
    assert itdr.stdout is not None and itdr.stderr is not None
    head = subprocess.Popen(["head", "-1"], stdin=itdr.stdout, stdout=subprocess.PIPE)
    itdr.stdout.close()  # only head reads it now, as in a shell pipeline
    first_line, _ = head.communicate(timeout=60)
    stderr = itdr.stderr.read().decode()
    itdr.stderr.close()
    assert itdr.wait(timeout=60) in (0, 1)
    assert stderr == ""
    assert first_line in (b"{\n", b"[\n")

