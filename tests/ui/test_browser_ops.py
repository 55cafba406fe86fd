"""The console's operations pages in a real browser (Debian's Chromium via Playwright):
schedules (a bad cron, create, pause, run now), workers, beat tasks, clusters (the Check
button, on a cluster that cannot be reached) and the service logs (filter, follow live).

The servers are this module's own: the `console` fixture of tests/ui/conftest.py, plus
`submitter beat` (so the beat tasks run and log) and two clusters (`closed`, SSH to a closed
port on 127.0.0.1; `here`, the local transport). The `browsing` fixture uses it, and saves
a screenshot of every step under the test's tmp folder (`NN-name.png`); a failed step names
its screenshot in the assertion message.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from submitter.runtime import Runtime
from submitter.security import Role, create_key
from tests.conftest import Process, eventually, make_backend
from tests.services import _free_ports
from tests.ui.conftest import Browsing, Console, _ready

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
expect = sync_api.expect

SCHEDULE_URL = re.compile(r"/ui/schedules/[0-9a-f]{32}$")
JOB_URL = re.compile(r"/ui/jobs/[0-9a-f]{32}$")


def no_browser_errors(browsing: Browsing, *allowed: str) -> None:
    unexpected = [e for e in browsing.errors if not any(a in e for a in allowed)]
    assert not unexpected, f"browser errors: {unexpected}"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """conftest's `console` (a real api and worker on the embedded backend) with beat and
    two clusters; it overrides that fixture for this module's `browsing`."""
    home = tmp_path_factory.mktemp("console-ops")
    (home / "id_test").write_text("not a key: the connection is refused before it is read\n")
    (home / "known_hosts").write_text("")
    clusters = [
        {
            "name": "closed",
            "host": "127.0.0.1",
            "port": _closed_port(),
            "user": "nobody",
            "key_file": str(home / "id_test"),
            "known_hosts": str(home / "known_hosts"),
            "workdir": "/tmp/submitter-closed",
            "connect_timeout": 5,
        },
        {"name": "here", "transport": "local", "workdir": str(home / "cluster")},
    ]
    port = _free_ports()[0]
    with make_backend("embedded", home) as backend:
        backend.env.update(
            SUBMITTER_API_HOST="127.0.0.1",
            SUBMITTER_API_PORT=str(port),
            SUBMITTER_CLUSTERS=json.dumps(clusters),
        )
        runtime = Runtime(backend.settings)
        keys = {"admin": backend.admin_key}
        try:
            with runtime.transaction() as session:
                for role in (Role.user, Role.viewer):
                    _, keys[role.value] = create_key(
                        session, f"{role.value}-{secrets.token_hex(3)}", role
                    )
        finally:
            runtime.close()
        processes = [
            Process(backend, "api"),
            Process(backend, "worker", "--concurrency=1"),
            Process(backend, "beat"),
        ]
        made = Console(f"http://127.0.0.1:{port}", backend, keys, processes)
        try:
            eventually(lambda: _ready(made.url), timeout=90)
            yield made
        finally:
            for process in processes:
                process.stop()


def test_schedules_bad_cron_create_pause_and_run_now(browsing: Browsing) -> None:
    page = browsing.page
    browsing.sign_in("admin")
    with browsing.step("schedules-empty"):
        browsing.goto("/ui/schedules")
        expect(page.locator("h1")).to_have_text("Schedules")
        expect(page.locator("#schedules-table")).to_contain_text("No schedules yet")
    with browsing.step("schedule-bad-cron"):
        page.click("summary:has-text('Create a schedule')")
        page.fill("#schedule-form input[name=name]", "browser-nightly")
        page.fill("#schedule-form input[name=cron]", "61 * * * *")
        page.fill("#schedule-form textarea[name=spec]", '{"message": "from the schedule"}')
        page.click("#schedule-create")
        expect(page.locator("#schedule-error")).to_contain_text("is not a valid cron expression")
        expect(page.locator("#schedule-form input[name=cron]")).to_have_value("61 * * * *")
        expect(page.locator("#schedule-form input[name=name]")).to_have_value("browser-nightly")
    with browsing.step("schedule-created"):
        page.fill("#schedule-form input[name=cron]", "0 3 * * *")
        page.fill("#schedule-form input[name=timezone]", "Europe/Helsinki")
        page.click("#schedule-create")
        page.wait_for_url(SCHEDULE_URL)
        expect(page.locator("h1")).to_contain_text("browser-nightly")
        expect(page.locator("h1 .state")).to_have_text("enabled")
        expect(page.locator("#schedule-facts")).to_contain_text("Europe/Helsinki")
        expect(page.locator("#schedule-spec")).to_contain_text("from the schedule")
    with browsing.step("schedule-paused"):
        page.click("button[data-action=pause]")
        page.wait_for_url(SCHEDULE_URL)
        expect(page.locator("h1 .state")).to_have_text("paused")
        expect(page.locator("#next-run")).to_contain_text("paused")
        expect(page.locator("button[data-action=resume]")).to_be_visible()
    with browsing.step("schedules-list-paused"):
        browsing.goto("/ui/schedules")
        row = page.locator("tr[data-schedule=browser-nightly]")
        expect(row).to_have_attribute("data-enabled", "false")
        expect(row.locator(".state")).to_have_text("paused")
        expect(row).to_contain_text("0 3 * * *")
    with browsing.step("schedule-run-now-job"):
        page.locator("tr[data-schedule=browser-nightly] button[data-action=run]").click()
        page.wait_for_url(JOB_URL)
        expect(page.locator("#job-summary .big-state .state")).to_have_text(
            "succeeded", timeout=60_000
        )
        expect(page.locator("#job-result")).to_contain_text("from the schedule")
        job_id = page.url.rsplit("/", 1)[-1]
    with browsing.step("schedules-list"):
        browsing.goto("/ui/schedules")
        row = page.locator("tr[data-schedule=browser-nightly]")
        expect(row.locator(f'a[href="/ui/jobs/{job_id}"]')).to_be_visible()
    with browsing.step("schedule-detail"):
        row.locator("a", has_text="browser-nightly").click()
        page.wait_for_url(SCHEDULE_URL)
        expect(page.locator("#schedule-jobs")).to_contain_text(job_id[:8])
        expect(page.locator("#schedule-jobs .state")).to_have_text("succeeded")
    with browsing.step("schedule-delete-confirm"):
        page.click("#delete-link")
        expect(page.locator("h1")).to_have_text("Delete schedule browser-nightly?")
    with browsing.step("schedule-deleted"):
        page.click("#delete-confirm")
        page.wait_for_url("**/ui/schedules?deleted=browser-nightly")
        expect(page.locator("#deleted-notice")).to_contain_text("browser-nightly")
        expect(page.locator("tr[data-schedule]")).to_have_count(0)
    no_browser_errors(browsing, "status of 422")  # the bad cron's answer


def test_workers_tasks_clusters_and_logs(browsing: Browsing, console: Console) -> None:
    page = browsing.page
    browsing.sign_in("admin")
    with browsing.step("workers"):
        browsing.goto("/ui/workers")
        row = page.locator("#workers tbody tr[data-state=online]")
        expect(row).to_have_count(1, timeout=30_000)
        expect(row).to_contain_text("s ago")
        expect(row.locator(".chip").first).to_be_visible()  # its queues
    with browsing.step("tasks"):
        browsing.goto("/ui/tasks")
        expect(page.locator("#tasks tbody tr[data-task]").first).to_be_visible()
        # beat runs: every task reports `ok` within a few of its intervals (live table)
        expect(page.locator("#tasks tbody tr[data-state=ok]")).to_have_count(
            page.locator("#tasks tbody tr[data-task]").count(), timeout=30_000
        )
        expect(page.locator("#beat-warning")).to_have_count(0)
    held: list[Any] = []  # the check's request, held back while the indicator is shown
    with browsing.step("clusters-checking"):
        browsing.goto("/ui/clusters")
        card = page.locator("#cluster-closed")
        expect(card).to_contain_text("nobody@127.0.0.1:")
        page.route("**/ui/clusters/closed/check", lambda route: held.append(route))
        card.locator("button.check-button").click()
        expect(card.locator(".checking")).to_be_visible()
        expect(card.locator(".checking")).to_contain_text("connecting")
        expect(card.locator("button.check-button")).to_be_disabled()
        assert held, "the check was not sent"
    with browsing.step("clusters-check-failed"):
        held[0].continue_()
        expect(card.locator(".check-result .alert-error")).to_contain_text(
            "cannot connect to 127.0.0.1:", timeout=30_000
        )
        expect(card.locator(".checking")).to_be_hidden()
        expect(card.locator("button.check-button")).to_be_enabled()
        assert page.url.endswith("/ui/clusters")  # swapped in, no navigation
    with browsing.step("clusters-check-local"):
        card = page.locator("#cluster-here")
        card.locator("button.check-button").click()
        expect(card.locator(".check-result .alert")).to_be_visible(timeout=30_000)
    with browsing.step("logs"):
        browsing.goto("/ui/logs")
        expect(page.locator("tr.log-record").first).to_be_visible()
        services = set(
            page.locator("tr.log-record").evaluate_all("rows => rows.map(r => r.dataset.service)")
        )
        assert {"api", "worker", "beat"} <= services, services
    with browsing.step("logs-worker"):
        page.select_option("#log-filters select[name=service]", "worker")
        page.click("#log-filters button[type=submit]")
        page.wait_for_url("**/ui/logs?service=worker*")
        shown = page.locator("tr.log-record").evaluate_all(
            "rows => rows.map(r => r.dataset.service)"
        )
        assert shown and set(shown) == {"worker"}, shown
        expect(page.locator("#log-filters select[name=service]")).to_have_value("worker")
    with browsing.step("logs-follow"):
        page.click("#follow-toggle")
        page.wait_for_url("**follow=1*")
        expect(page.locator("#logs-newer")).to_contain_text("Following live")
        newest = int(page.locator("tr.log-record").first.get_attribute("data-id") or 0)
        job = console.submit("echo", {"message": "followed", "fail": True})
        # the worker logs the job's failure: the record arrives on top without a reload
        expect(page.locator("tr.log-record").first).not_to_have_attribute(
            "data-id", str(newest), timeout=30_000
        )
        first = int(page.locator("tr.log-record").first.get_attribute("data-id") or 0)
        assert first > newest
        ids = page.locator("tr.log-record").evaluate_all(
            "rows => rows.map(r => Number(r.dataset.id))"
        )
        assert ids == sorted(ids, reverse=True), ids[:10]
        expect(page.locator(f'tr.log-record a[href="/ui/jobs/{job["id"]}"]').first).to_be_visible(
            timeout=30_000
        )
    no_browser_errors(browsing)
