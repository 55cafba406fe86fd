"""The console's sign-in, session cookie, CSRF and roles, over plain HTTP (in-process app)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from submitter.ui.deps import csrf_token
from tests.conftest import Stack
from tests.ui.conftest import sign_in

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def token_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def test_pages_redirect_to_sign_in_and_keep_where_they_were(ui_stack: Stack) -> None:
    client = TestClient(ui_stack.api.app)
    for path in ("/ui/jobs", "/ui/datasets", "/ui/models/credit", "/ui/train"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/login?next=%2Fui%2F"), path
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/jobs"
    # htmx polling after the session ended: told where to go, not given the login page
    polled = client.get("/ui/jobs/table", headers={"HX-Request": "true"})
    assert polled.status_code == 401 and polled.headers["HX-Redirect"].startswith("/ui/login")
    login = client.get("/ui/login")
    assert login.status_code == 200 and 'name="key"' in login.text


def test_sign_in_sets_a_strict_http_only_cookie_and_goes_back(ui_stack: Stack) -> None:
    client = TestClient(ui_stack.api.app)
    key = ui_stack.keys["user"]
    response = client.post(
        "/ui/login", data={"key": key, "next": "/ui/datasets?name=x"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/datasets?name=x"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("submitter_session=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/ui", "samesite=strict"} <= flags, cookie
    assert "secure" not in flags  # plain http here
    assert key not in response.headers["location"]
    page = client.get("/ui/jobs")
    assert page.status_code == 200 and "user-" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_cookie_is_secure_over_https_and_behind_a_proxy(ui_stack: Stack) -> None:
    for client, headers in (
        (TestClient(ui_stack.api.app, base_url="https://testserver"), {}),
        (TestClient(ui_stack.api.app), {"X-Forwarded-Proto": "https"}),
    ):
        response = client.post(
            "/ui/login",
            data={"key": ui_stack.keys["viewer"]},
            headers=headers,
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert "secure" in response.headers["set-cookie"].lower()


def test_bad_keys_and_open_redirects_are_refused(ui_stack: Stack) -> None:
    client = TestClient(ui_stack.api.app)
    wrong = "sk_not_a_key_" + "x" * 20
    response = client.post("/ui/login", data={"key": wrong}, follow_redirects=False)
    assert response.status_code == 401
    assert "invalid or was revoked" in response.text
    assert wrong not in response.text  # not echoed back into the form
    assert "set-cookie" not in response.headers
    assert client.post("/ui/login", data={}).status_code == 401
    for target in ("https://evil.example/", "//evil.example/ui", "/api/v1/jobs", "/ui\\x"):
        response = client.post(
            "/ui/login",
            data={"key": ui_stack.keys["viewer"], "next": target},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/ui/jobs", target


def test_login_from_another_site_is_refused(ui_stack: Stack) -> None:
    client = TestClient(ui_stack.api.app)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = client.post(
            "/ui/login",
            data={"key": ui_stack.keys["admin"]},
            headers=headers,
            follow_redirects=False,
        )
        assert response.status_code == 403, headers
        assert "set-cookie" not in response.headers
    same = client.post(
        "/ui/login",
        data={"key": ui_stack.keys["admin"]},
        headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert same.status_code == 303


def test_post_without_or_with_a_wrong_csrf_token_is_403(ui_stack: Stack) -> None:
    client = sign_in(ui_stack, "user")
    job = ui_stack.submit("echo", spec={"message": "csrf"})
    token = token_of(client.get(f"/ui/jobs/{job['id']}").text)
    assert token == csrf_token(ui_stack.keys["user"])
    cancel = f"/ui/jobs/{job['id']}/cancel"
    for data, headers in (
        ({}, {}),
        ({"csrf_token": "0" * 64}, {}),
        ({"csrf_token": csrf_token(ui_stack.keys["viewer"])}, {}),  # another session's
        ({}, {"X-CSRF-Token": "nope"}),
        ({"csrf_token": token}, {"Origin": "https://evil.example"}),
    ):
        response = client.post(cancel, data=data, headers=headers, follow_redirects=False)
        assert response.status_code == 403, (data, headers)
        assert "CSRF" in response.text
    assert ui_stack.job(job["id"])["state"] == "queued"
    done = client.post(cancel, data={"csrf_token": token}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/ui/jobs/{job['id']}"
    assert ui_stack.job(job["id"])["state"] == "cancelled"
    # the header works as well as the field (htmx sends it)
    other = ui_stack.submit("echo", spec={"message": "csrf header"})
    response = client.post(
        f"/ui/jobs/{other['id']}/cancel", headers={"X-CSRF-Token": token}, follow_redirects=False
    )
    assert response.status_code == 303


def test_a_viewer_sees_no_buttons_and_a_forged_post_is_403(ui_stack: Stack) -> None:
    client = sign_in(ui_stack, "viewer")
    job = ui_stack.submit("echo", spec={"message": "view only"})
    page = client.get(f"/ui/jobs/{job['id']}")
    assert page.status_code == 200
    assert "cancel-button" not in page.text
    token = token_of(page.text)  # the sign-out form's
    assert "Submit a job" not in client.get("/ui/jobs").text
    assert "upload-form" not in client.get("/ui/datasets").text
    assert 'href="/ui/train"' not in client.get("/ui/jobs").text
    for path, data in (
        (f"/ui/jobs/{job['id']}/cancel", {}),
        ("/ui/jobs", {"kind": "echo", "spec": "{}"}),
        ("/ui/train", {"dataset": "x", "target": "y", "model_name": "z"}),
        ("/ui/models/credit/aliases", {"version": "1"}),
    ):
        response = client.post(path, data={**data, "csrf_token": token}, follow_redirects=False)
        assert response.status_code == 403, path
        assert "needs user or higher" in response.text, path
    upload = client.post(
        "/ui/datasets/upload",
        files={"file": ("x.csv", b"a,b\n1,2\n")},
        data={"name": "viewer-upload"},
        headers={"X-CSRF-Token": token, "Accept": "application/json"},
    )
    assert upload.status_code == 403 and "needs user" in upload.json()["detail"]
    assert client.get("/ui/train").status_code == 403
    assert ui_stack.job(job["id"])["state"] == "queued"


def test_sign_out_forgets_the_session(ui_stack: Stack) -> None:
    client = sign_in(ui_stack, "user")
    token = token_of(client.get("/ui/jobs").text)
    assert client.post("/ui/logout", follow_redirects=False).status_code == 403  # no token
    response = client.post("/ui/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?signed_out=1"
    assert "submitter_session=" in response.headers["set-cookie"]
    assert "max-age=0" in response.headers["set-cookie"].lower()
    assert client.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_a_revoked_key_ends_its_session(ui_stack: Stack) -> None:
    from submitter.security import Role, create_key, revoke_key

    with ui_stack.runtime.transaction() as session:
        row, key = create_key(session, "revoke-me", Role.user)
    client = TestClient(ui_stack.api.app)
    client.post("/ui/login", data={"key": key})
    assert client.get("/ui/jobs").status_code == 200
    with ui_stack.runtime.transaction() as session:
        revoke_key(session, row.id)
    response = client.get("/ui/jobs", follow_redirects=False)
    assert response.status_code == 303
    assert "expired=1" in response.headers["location"]
    assert "max-age=0" in response.headers["set-cookie"].lower()


@pytest.mark.parametrize("role", ["admin", "user", "viewer"])
def test_the_key_is_in_no_page(ui_stack: Stack, role: str) -> None:
    """Every page a signed-in caller sees, error pages included: never the key."""
    key = ui_stack.keys[role]
    client = sign_in(ui_stack, role)
    job = ui_stack.submit("echo", spec={"message": "pages"})
    paths = [
        "/ui/login",
        "/ui/jobs",
        "/ui/jobs?state=nope&kind=x&schedule=none",
        "/ui/jobs/table",
        f"/ui/jobs/{job['id']}",
        f"/ui/jobs/{job['id']}/summary",
        "/ui/jobs/" + "0" * 32,
        "/ui/datasets",
        "/ui/datasets/missing@1",
        "/ui/models",
        "/ui/models/missing",
        "/ui/train",
        "/ui/no-such-page",
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code < 500, path
        assert key not in response.text, path
        assert all(key not in value for value in response.headers.values()), path
        for hop in response.history:
            assert key not in hop.headers.get("location", ""), path


def test_any_key_survives_the_cookie_and_a_malformed_cookie_is_no_session(
    ui_stack: Stack,
) -> None:
    from submitter.ui.deps import cookie_value, key_of

    for key in ("sk_abc-_123", 'a key; with "quotes", spaces=and\\slashes', "ä€"):
        assert key_of(cookie_value(key)) == key
    for value in ("", "!!!", "a", "//8"):  # not base64url, or not UTF-8
        assert key_of(value) is None, value
    client = TestClient(ui_stack.api.app)
    for value in ("!!!", cookie_value("sk_unknown"), "//8"):
        client.cookies.set("submitter_session", value, domain="testserver", path="/ui")
        response = client.get("/ui/jobs", follow_redirects=False)
        assert response.status_code == 303, value
        assert response.headers["location"].startswith("/ui/login")
        events = client.get(
            "/ui/jobs/" + "a" * 32 + "/events", headers={"Accept": "text/event-stream"}
        )
        assert events.status_code == 401  # an EventSource: no page, it stops
        client.cookies.clear()
