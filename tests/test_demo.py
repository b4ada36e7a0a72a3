"""`itdr demo`: what an evaluator sees with no tenant and no Slack: the banner, a check of each sample tenant, a
consent approved and verified, a watched tenant losing a permission and the sweep saying so and who did it; and
nothing left running after `quit`."""

from __future__ import annotations

import io
import os
import ssl
import subprocess
import sys
import threading
from pathlib import Path

from bot.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


async def demo(*lines: str) -> str:
    out = io.StringIO()
    assert await run_demo(lines=[*lines, "quit"], out=out) == 0
    return out.getvalue()


def section(text: str, after: str) -> str:
    """The transcript from the answer to the line that starts with `after`."""
    return text[text.index(after):]


async def test_the_banner_names_the_sample_tenants_and_says_nothing_is_real() -> None:
    text = await demo()
    banner = text.split("itdr>")[0]
    assert "NOTHING HERE IS REAL" in banner and "nothing leaves this machine" in banner
    for domain in ("contoso.onmicrosoft.com", "fabrikam.onmicrosoft.com", "northwind.onmicrosoft.com"):
        assert domain in banner
    assert "only eligible under PIM" in banner


async def test_each_sample_tenant_checks_as_the_banner_says() -> None:
    text = await demo("check contoso.onmicrosoft.com", "check fabrikam.onmicrosoft.com",
                      "check northwind.onmicrosoft.com")
    contoso, fabrikam, northwind = text.split("== ")[1:4]
    assert contoso.startswith("✓ Ready")
    assert fabrikam.startswith("⛔ Blocked") and "✗ AuditLog.Read.All" in fabrikam and "Why it matters" in fabrikam
    assert "✗ Security Administrator" in northwind and "Eligible only (PIM)" in northwind
    assert "✗ AppRoleAssignment.ReadWrite.All" in northwind, "what v6 added is missing: behind a revision"
    assert "Roles that end (1)" in northwind and "`Exchange Administrator`: held until" in northwind


async def test_a_consent_is_requested_approved_by_the_other_approver_granted_and_verified() -> None:
    text = await demo("consent fabrikam.onmicrosoft.com", "2", "as avery approve",  # 2: Approve, as oneself
                      "demo admin-consent fabrikam.onmicrosoft.com")
    early = await demo("consent fabrikam.onmicrosoft.com", "demo admin-consent fabrikam.onmicrosoft.com")
    assert "(no admin-consent link for Fabrikam yet" in early, "no link before the approvers decide"
    assert "== Consent request: Fabrikam ==" in text
    assert "This is your own request: another approver has to decide it." in text, "four eyes, even in the demo"
    approved = section(text, "== Consent approved, waiting for the admin: Fabrikam ==")
    assert "Approved by U0AVERY" in approved and "adminconsent?client_id=" in approved
    assert "https://127.0.0.1:" in approved, "the admin-consent link points at the simulated cloud"
    assert "opened the link. Microsoft: Admin consent granted in Fabrikam" in approved, "the card's own link"
    verified = section(approved, "== Consent verified: Fabrikam ==")
    assert "a fresh readiness check shows v6 granted (verdict: ready)" in verified


async def test_a_revoked_permission_is_drift_in_the_next_sweep_naming_who() -> None:
    text = await demo("watch contoso.onmicrosoft.com", "sweep",
                      "demo revoke contoso.onmicrosoft.com user.read.all", "sweep")
    assert "This channel now watches Contoso" in text
    assert "(swept 1 of 1 watched tenant: 0 changed)" in text, "a quiet sweep says so and posts nothing"
    drift = section(text, "== 🚨 Drift: Contoso ==")
    assert "`User.Read.All` pass → fail" in drift
    assert "Remove app role assignment from service principal (`User.Read.All`) by it-admin@contoso.onmicrosoft.com" \
        in drift
    assert drift.count("== 🚨 Drift") == 1


async def test_nothing_is_left_running_after_quit() -> None:
    before = {thread.name for thread in threading.enumerate()}
    await demo("check contoso.onmicrosoft.com")
    after = {thread.name for thread in threading.enumerate()} - before
    assert "fake-microsoft" not in after, "the simulated cloud's server stopped"


def test_run_demo_from_a_shell_with_piped_input(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ITDR_"))}
    env |= {"PYTHONPATH": str(ROOT), "REDIS_URL": "redis://127.0.0.1:1/0"}  # ignored: the demo embeds its own
    result = subprocess.run([sys.executable, "-m", "bot.cli", "demo"], input="check contoso.onmicrosoft.com\nquit\n",
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "NOTHING HERE IS REAL" in result.stdout and "== ✓ Ready ==" in result.stdout
    assert "Traceback" not in result.stderr and "Some tasks did not finish" not in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing written where it ran"


def test_the_simulated_admin_consent_redirects_as_microsoft_documents() -> None:
    """../shared/reference/microsoft-apis.md §7: success → `tenant`, `state`, `admin_consent=True`; an error →
    `error`, `error_description`, `state` and no `tenant`."""
    from urllib.parse import parse_qs, urlsplit

    import httpx

    from bot.microsoft.tenant import admin_consent_url
    from bot.simulated.microsoft import GRAPH_APP_ID, FakeMicrosoft, TenantScenario

    with FakeMicrosoft() as cloud:
        scenario = cloud.add_tenant(TenantScenario("5b7c6a8e-1111-4e2f-9c3d-000000000001"))
        cloud.consent_grants = [(GRAPH_APP_ID, "b0afded3-3588-46d8-8b3d-9842eff778da")]  # AuditLog.Read.All
        back = "https://itdr.example.com/consent/callback"
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cloud.ca_path)), trust_env=False) as client:
            ok = client.get(admin_consent_url(cloud.authority_host, cloud.target_app_id, scenario.tenant_id,
                                              state="s1", redirect_uri=back))
            wrong = client.get(admin_consent_url(cloud.authority_host, "not-the-app", scenario.tenant_id,
                                                 state="s2", redirect_uri=back))
    assert ok.status_code == 302 and ok.headers["location"].startswith(back + "?")
    assert parse_qs(urlsplit(ok.headers["location"]).query) == {
        "tenant": [scenario.tenant_id], "state": ["s1"], "admin_consent": ["True"]}
    assert (GRAPH_APP_ID, "b0afded3-3588-46d8-8b3d-9842eff778da") in scenario.app_role_assignments
    assert scenario.audit_events[-1]["activityDisplayName"] == "Consent to application"
    refused = parse_qs(urlsplit(wrong.headers["location"]).query)
    assert refused["error"] and refused["state"] == ["s2"] and "tenant" not in refused


async def test_demo_commands_refuse_what_they_cannot_do_and_say_why() -> None:
    text = await demo("demo revoke contoso.onmicrosoft.com mail.readwite", "demo revoke nowhere.example Mail.Send",
                      "sweep", "as avery approve")
    assert "(no catalog item `mail.readwite`; did you mean Mail.ReadWrite" in text
    assert "(no sample tenant nowhere.example: contoso.onmicrosoft.com" in text
    assert "(no tenant is watched here yet" in text
    assert "(no approve button" in text



async def test_a_microsoft_outage_is_could_not_check_never_ready_and_the_sweep_says_so() -> None:
    text = await demo("watch contoso.onmicrosoft.com", "demo outage exchange", "sweep",
                      "check contoso.onmicrosoft.com", "demo outage off", "check contoso.onmicrosoft.com")
    during = section(text, "(simulated: Exchange's admin API now answers 500")
    assert "(swept 1 of 1 watched tenant: 0 changed, 1 could not be read)" in during
    assert "== ? Could not check everything ==" in during and "this is not a pass" in during
    assert "Could not check: Exchange answered 500 InternalServerError: Simulated outage." in during
    assert "fake" not in during.lower() and "exchange: exchange" not in during.lower()
    after = section(during, "(simulated: Microsoft answers normally again)")
    assert "== ✓ Ready ==" in after
    assert "Traceback" not in text
