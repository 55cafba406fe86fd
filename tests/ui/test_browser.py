"""The console in a real browser: Debian's Chromium driven by Playwright against a real
`submitter api` and `submitter worker` (embedded backend), one pair for the module.

Each test saves a screenshot of every page it checks under its tmp folder (`NN-name.png`);
a failed check names its screenshot in the assertion message, with the servers' last lines.
Nothing may log a browser error (a blocked script or style, a failed load) unless the test
expects it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.ui.conftest import Browsing, Console

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
expect = sync_api.expect

CREDIT = Path(__file__).parents[1] / "data" / "credit.csv"
JOB_URL = re.compile(r"/ui/jobs/[0-9a-f]{32}$")
#: Train on a slice: the test is about the console, not the models.
TRAIN_ROWS = 300


def no_browser_errors(browsing: Browsing, *allowed: str) -> None:
    unexpected = [e for e in browsing.errors if not any(a in e for a in allowed)]
    assert not unexpected, f"browser errors: {unexpected}"


def credit_slice(folder: Path, rows: int = TRAIN_ROWS) -> Path:
    lines = CREDIT.read_text().splitlines()[: rows + 1]
    path = folder / "credit-small.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def mark_no_reload(page: Any) -> None:
    """A flag in the window: still there later means the page was never reloaded."""
    page.evaluate("window.__submitterNoReload = true")


def was_not_reloaded(page: Any) -> bool:
    return bool(page.evaluate("window.__submitterNoReload === true"))


def test_sign_in_and_sign_out(browsing: Browsing) -> None:
    page, key = browsing.page, browsing.console.keys["admin"]
    with browsing.step("login-redirect"):
        browsing.goto("/ui/jobs")
        page.wait_for_url("**/ui/login?next=*")
        expect(page.locator("input[name=key]")).to_be_visible()
    with browsing.step("login-wrong-key"):
        page.fill("input[name=key]", "sk_wrong_key_0000000000")
        page.click("button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("invalid or was revoked")
        assert "sk_wrong" not in page.url and "sk_wrong" not in page.content()
    with browsing.step("signed-in"):
        page.fill("input[name=key]", key)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/jobs")
        expect(page.locator(".who .name")).to_have_text("bootstrap admin")
        expect(page.locator(".who .role")).to_have_text("admin")
        cookie = next(c for c in browsing.context.cookies() if c["name"] == "submitter_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
        assert page.evaluate("document.cookie") == ""  # no script can read the session
        assert key not in page.content() and key not in page.url
    with browsing.step("signed-out"):
        page.click("#sign-out")
        page.wait_for_url("**/ui/login?signed_out=1")
        expect(page.locator(".alert-info")).to_contain_text("Signed out")
        assert not [c for c in browsing.context.cookies() if c["name"] == "submitter_session"]
        browsing.goto("/ui/jobs")
        page.wait_for_url("**/ui/login?next=*")
    no_browser_errors(browsing, "status of 401")  # the wrong key's answer


def test_viewer_sees_no_cancel_button_and_a_forged_post_is_403(
    browsing: Browsing, console: Console
) -> None:
    page = browsing.page
    job = console.submit("echo", {"message": "viewer", "sleep_seconds": 30})
    try:
        browsing.sign_in("viewer")
        with browsing.step("viewer-jobs"):
            expect(page.locator("#jobs-table")).to_contain_text(job["id"][:8])
            expect(page.get_by_text("Submit a job")).to_have_count(0)
            expect(page.locator(".bar nav a", has_text="Train")).to_have_count(0)
        with browsing.step("viewer-job"):
            browsing.goto(f"/ui/jobs/{job['id']}")
            expect(page.locator("#job-summary")).to_be_visible()
            expect(page.locator("#cancel-button")).to_have_count(0)
        with browsing.step("viewer-forged-cancel"):
            status, text = page.evaluate(
                """async (url) => {
                    const token = document.querySelector("input[name=csrf_token]").value;
                    const response = await fetch(url, {
                        method: "POST",
                        headers: {"Content-Type": "application/x-www-form-urlencoded"},
                        body: "csrf_token=" + encodeURIComponent(token),
                    });
                    return [response.status, await response.text()];
                }""",
                f"/ui/jobs/{job['id']}/cancel",
            )
            assert status == 403 and "needs user or higher" in text, (status, text[:300])
            forged = page.request.post(f"{console.url}/ui/jobs/{job['id']}/cancel", form={})
            assert forged.status == 403  # no token at all
        assert console.job(job["id"])["state"] in ("queued", "running")
        no_browser_errors(browsing, "status of 403")
    finally:
        with console.api() as client:
            client.post(f"/api/v1/jobs/{job['id']}/cancel")


def test_an_echo_job_reaches_succeeded_without_a_reload(browsing: Browsing) -> None:
    page = browsing.page
    browsing.sign_in("user")
    with browsing.step("submit-form"):
        page.click("summary:has-text('Submit a job')")
        page.select_option("#submit-form select[name=kind]", "echo")
        page.fill(
            "#submit-form textarea[name=spec]",
            '{"message": "hello from the browser", "sleep_seconds": 3}',
        )
        page.click("#submit-form button[type=submit]")
        page.wait_for_url(JOB_URL)
        mark_no_reload(page)
    with browsing.step("job-running"):
        expect(page.locator("#job-summary .big-state .state")).to_have_text(
            re.compile("queued|running")
        )
        expect(page.locator("#job-summary .big-state .state")).to_have_text(
            "running", timeout=30_000
        )
    with browsing.step("job-succeeded"):
        expect(page.locator("#job-summary .big-state .state")).to_have_text(
            "succeeded", timeout=60_000
        )
        expect(page.locator("#job-log")).to_contain_text("echo: hello from the browser")
        expect(page.locator("#log-status")).to_have_text("ended")
        expect(page.locator("#job-result")).to_contain_text("hello from the browser")
        expect(page.locator("#cancel-button")).to_have_count(0)
        assert was_not_reloaded(page), "the page was reloaded"
    no_browser_errors(browsing)


def test_upload_a_csv_and_see_its_preview(browsing: Browsing, tmp_path: Path) -> None:
    page = browsing.page
    csv = credit_slice(tmp_path)
    browsing.sign_in("user")
    with browsing.step("datasets"):
        browsing.goto("/ui/datasets")
        page.fill("#upload-form input[name=name]", "credit-upload")
        page.set_input_files("#upload-form input[type=file]", str(csv))
        # The bar's highest value, kept across the navigation that follows the upload.
        page.evaluate(
            """() => {
                const bar = document.getElementById("upload-bar");
                new MutationObserver(() => sessionStorage.setItem("bar", bar.value))
                    .observe(bar, {attributes: true});
            }"""
        )
        browsing.shot("upload-form-filled")
        page.click("#upload-button")
        page.wait_for_url("**/ui/datasets/credit-upload@1")
    with browsing.step("dataset"):
        assert page.evaluate("sessionStorage.getItem('bar')") == "100"
        expect(page.locator("#row-count")).to_have_text(str(TRAIN_ROWS))
        expect(page.locator("#preview tbody tr")).to_have_count(20)
        expect(page.locator("#preview thead")).to_contain_text("LIMIT_BAL")
        expect(page.locator("#preview tbody tr").first).to_contain_text("20000")
        expect(page.locator("#column-stats")).to_contain_text("PAY_AMT6")  # loaded after
        expect(page.locator("#versions tbody tr")).to_have_count(1)
    no_browser_errors(browsing)


def test_a_bad_csv_shows_the_reason(browsing: Browsing, tmp_path: Path) -> None:
    page = browsing.page
    bad = tmp_path / "ragged.csv"
    bad.write_text("a,b,c\n1,2,3\n4,5\n")
    browsing.sign_in("user")
    with browsing.step("bad-upload"):
        browsing.goto("/ui/datasets")
        page.fill("#upload-form input[name=name]", "ragged")
        page.set_input_files("#upload-form input[type=file]", str(bad))
        page.click("#upload-button")
        error = page.locator("#upload-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("Refused (422): file: ragged row at line 3")
        expect(page.locator("#upload-button")).to_be_enabled()
        assert page.url.endswith("/ui/datasets")
    no_browser_errors(browsing, "status of 422")


def test_train_see_the_leaderboard_and_plots_promote_and_predict(
    browsing: Browsing, console: Console, tmp_path: Path
) -> None:
    page = browsing.page
    csv = credit_slice(tmp_path)
    with console.api("user") as client:
        uploaded = client.post(
            "/api/v1/datasets",
            files={"file": (csv.name, csv.read_bytes())},
            data={"name": "credit-train"},
        )
    assert uploaded.status_code in (200, 201), uploaded.text
    browsing.sign_in("user")
    with browsing.step("train-form"):
        # The first view imports scikit-learn in the API process (started at sign-in).
        page.goto(f"{console.url}/ui/train?dataset=credit-train", timeout=90_000)
        expect(page.locator("#train-dataset")).to_have_value("credit-train@1")
        expect(page.locator("#train-target")).to_have_value("default")
        for box in page.locator("input[name=models]").all():
            box.uncheck()
        page.check("input[name=models][value=lr]")
        page.check("input[name=models][value=dt]")
        page.fill("#train-folds", "3")
        page.fill("#train-model-name", "credit-ui")
        browsing.shot("train-form-filled")
        page.click("#train-button")
        page.wait_for_url(JOB_URL)
        mark_no_reload(page)
    with browsing.step("train-job"):
        expect(page.locator("#job-summary .big-state .state")).to_have_text(
            "succeeded", timeout=180_000
        )
        expect(page.locator("#job-log")).to_contain_text("registered credit-ui version 1")
        expect(page.locator("#job-artifacts")).to_contain_text("leaderboard.json")
        assert was_not_reloaded(page)
    with browsing.step("model"):
        page.click("#model-link")
        page.wait_for_url("**/ui/models/credit-ui/versions/1")
        expect(page.locator("#leaderboard tbody tr")).to_have_count(3)  # lr, dt, their blend
        expect(page.locator("#leaderboard")).to_contain_text("Logistic")
        expect(page.locator("#leaderboard")).to_contain_text("Decision Tree")
        expect(page.locator("#metrics tbody tr").first).to_be_visible()
        expect(page.locator("#versions tbody tr")).to_have_count(1)
        expect(page.locator("#versions")).to_contain_text("credit-train@1")
        images = page.locator("#plots img")
        assert images.count() >= 1, "no plot on the page"
        for index in range(images.count()):
            image = images.nth(index)
            image.scroll_into_view_if_needed()
            page.wait_for_function(
                "(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle()
            )
            size = image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
            assert size == [800, 600], (image.get_attribute("src"), size)
            served = page.request.get(console.url + str(image.get_attribute("src")))
            body = served.body()
            assert served.status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n" and len(body) > 1000
    with browsing.step("promoted"):
        page.click("#promote-button")
        page.wait_for_url("**/ui/models/credit-ui/versions/1")
        expect(page.locator("#aliases")).to_contain_text("production")
        expect(page.locator("#aliases")).to_contain_text("v1")
        expect(page.locator("h1 .chip.alias")).to_have_text("production")
        page.set_viewport_size({"width": 1280, "height": 1290})
        page.evaluate("window.scrollTo(0, 0)")
    browsing.shot("model-top", full_page=False)
    browsing.keep_for_readme("model-top", "console-model.png")
    with browsing.step("predicted"):
        page.click("#predict-button")
        expect(page.locator("#predictions tbody tr")).to_have_count(3)
        expect(page.locator("#predictions thead")).to_contain_text("p(1)")
        page.fill("#predict-rows", "LIMIT_BAL,AGE\n1000,30\n")
        page.click("#predict-button")
        expect(page.locator("#predict-error")).to_contain_text("missing column")
    with console.api() as client:
        aliases = client.get("/api/v1/models/credit-ui").json()["aliases"]
    assert aliases == {"production": 1}
    no_browser_errors(browsing, "status of 422")


def test_cancel_a_running_job(browsing: Browsing, console: Console) -> None:
    page = browsing.page
    job = console.submit("echo", {"message": "to cancel", "sleep_seconds": 60}, role="user")
    browsing.sign_in("user")
    with browsing.step("running"):
        browsing.goto(f"/ui/jobs/{job['id']}")
        expect(page.locator("#job-summary .big-state .state")).to_have_text(
            "running", timeout=30_000
        )
        expect(page.locator("#cancel-button")).to_be_visible()
    with browsing.step("cancelled"):
        page.click("#cancel-button")
        page.wait_for_url(f"**/ui/jobs/{job['id']}")
        expect(page.locator("#job-summary .big-state .state")).to_have_text("cancelled")
        expect(page.locator("#job-message")).to_contain_text("cancelled by user-")
        expect(page.locator("#cancel-button")).to_have_count(0)
    assert console.job(job["id"])["state"] == "cancelled"
    no_browser_errors(browsing)


def test_the_job_list_follows_states_live(browsing: Browsing, console: Console) -> None:
    page = browsing.page
    browsing.sign_in("admin")
    mark_no_reload(page)
    quick = console.submit("echo", {"message": "quick", "sleep_seconds": 2})
    failing = console.submit("echo", {"message": "this one fails", "fail": True})
    slow = console.submit("echo", {"message": "slow", "sleep_seconds": 60})
    page.set_viewport_size({"width": 1280, "height": 560})  # the README's picture
    try:
        with browsing.step("jobs-live", full_page=False):
            for job, state in ((quick, "succeeded"), (failing, "failed"), (slow, "running")):
                row = page.locator(f"tr[data-job='{job['id']}'] .state")
                expect(row).to_have_text(state, timeout=60_000)
            expect(page.locator(f"tr[data-job='{slow['id']}'] progress")).to_be_visible(
                timeout=30_000
            )
            assert was_not_reloaded(page)
        browsing.keep_for_readme("jobs-live", "console-jobs.png")
        with browsing.step("jobs-filtered"):
            page.select_option("#job-filters select[name=state]", "failed")
            page.click("#job-filters button[type=submit]")
            page.wait_for_url("**/ui/jobs?state=failed*")
            expect(page.locator(f"tr[data-job='{failing['id']}']")).to_be_visible()
            expect(page.locator(f"tr[data-job='{quick['id']}']")).to_have_count(0)
    finally:
        with console.api() as client:
            client.post(f"/api/v1/jobs/{slow['id']}/cancel")
    no_browser_errors(browsing)


def test_docs_render_with_the_network_cut_off(browsing: Browsing, console: Console) -> None:
    if importlib.util.find_spec("submitter.api.docs") is None:
        pytest.skip("the offline /docs (submitter.api.docs) has not landed yet")
    page = browsing.page
    refused: list[str] = []

    def local_only(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    with browsing.step("docs", full_page=False):
        browsing.goto("/docs")
        operations = page.locator(".swagger-ui .opblock")
        expect(operations.first).to_be_visible(timeout=20_000)
        assert operations.count() >= 20, operations.count()
        expect(page.locator(".swagger-ui")).to_contain_text("/api/v1/jobs")
    assert not refused, f"/docs asked for outside addresses: {refused}"
    no_browser_errors(browsing)
