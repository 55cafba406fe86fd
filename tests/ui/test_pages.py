"""The console's pages over plain HTTP: what they show, the forms' answers, and that bad
input is a page with the reason (404, 409, 422), never a 500."""

from __future__ import annotations

import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from submitter.db.models import Artifact
from submitter.jobs.artifacts import artifact_key
from tests.conftest import Stack
from tests.ui.conftest import sign_in

ERROR = re.compile(r'id="error-message">([^<]*)<')


@pytest.fixture(scope="module")
def user(ui_stack: Stack) -> TestClient:
    return sign_in(ui_stack, "user")


@pytest.fixture(scope="module")
def token(ui_stack: Stack) -> str:
    from submitter.ui.deps import csrf_token

    return csrf_token(ui_stack.keys["user"])


def token_of_user(stack: Stack) -> str:
    from submitter.ui.deps import csrf_token

    return csrf_token(stack.keys["user"])


def error_of(html: str) -> str:
    found = ERROR.search(html)
    assert found, html[:500]
    return found.group(1)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/ui/jobs/" + "a" * 32, "not found"),
        ("/ui/jobs/nope", "job nope not found"),
        ("/ui/jobs/" + "a" * 32 + "/summary", "not found"),
        ("/ui/jobs/" + "a" * 32 + "/events", "not found"),
        ("/ui/jobs/" + "a" * 32 + "/artifacts/x.txt", "not found"),
        ("/ui/datasets/nothing", "no dataset"),
        ("/ui/datasets/nothing@99999999999999", "no dataset"),
        ("/ui/datasets/nothing/stats", "no dataset"),
        ("/ui/models/nothing", "no model named"),
        ("/ui/models/nothing/versions/1", "no model named"),
        ("/ui/models/nothing/versions/abc", "no version"),
        ("/ui/models/nothing/versions/99999999999", "no version"),
        ("/ui/nothing/here", "Not Found"),
    ],
)
def test_unknown_things_are_404_pages(user: TestClient, path: str, message: str) -> None:
    response = user.get(path)
    assert response.status_code == 404, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    assert message in error_of(response.text)


def test_a_nul_anywhere_is_a_422_page(user: TestClient, token: str) -> None:
    assert user.get("/ui/jobs?kind=a%00b").status_code == 422
    response = user.post("/ui/jobs", data={"kind": "echo\x00", "spec": "{}", "csrf_token": token})
    assert response.status_code == 422
    assert "NUL" in error_of(response.text)
    response = user.post(
        "/ui/train",
        data={"dataset": "x\x00", "target": "y", "model_name": "z", "csrf_token": token},
    )
    assert response.status_code == 422


def test_job_list_filters_are_checked_not_500(ui_stack: Stack, user: TestClient) -> None:
    job = ui_stack.submit("echo", spec={"message": "listed"})
    page = user.get("/ui/jobs")
    assert job["id"][:8] in page.text and 'hx-trigger="every 2s"' in page.text
    table = user.get("/ui/jobs/table?kind=echo&state=queued")
    assert table.status_code == 200 and job["id"][:8] in table.text
    assert "<html" not in table.text  # a fragment
    for query, shown in (
        ("state=bogus", "unknown state"),
        ("schedule=no-such-schedule", "no-such-schedule"),
    ):
        response = user.get(f"/ui/jobs?{query}")
        assert response.status_code == 200 and shown in response.text, query
    assert job["id"][:8] not in user.get("/ui/jobs?kind=train").text
    assert user.get("/ui/jobs?offset=-5").status_code == 200
    assert user.get("/ui/jobs?offset=99999999999999999999").status_code == 200


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "echo", "spec": "{not json"}, "spec: not JSON"),
        ({"kind": "echo", "spec": "[1, 2]"}, "spec: must be a JSON object"),
        ({"kind": "echo", "spec": '{"message": NaN}'}, "NaN is not a JSON number"),
        ({"kind": "echo", "spec": '{"message": "\\u0000"}'}, "NUL"),
        ({"kind": "echo", "spec": '{"n": 99999999999999999999999}'}, "64-bit"),
        ({"kind": "echo", "spec": "{}"}, "spec.message: Field required"),
        ({"kind": "nope", "spec": "{}"}, "unknown job kind"),
        ({"kind": "echo", "spec": '{"message": "x"}', "depends_on": "f" * 32}, "unknown job"),
    ],
)
def test_submit_form_shows_the_reason(
    user: TestClient, token: str, fields: dict[str, str], message: str
) -> None:
    response = user.post("/ui/jobs", data={**fields, "csrf_token": token}, follow_redirects=False)
    assert response.status_code == 422
    found = re.search(r'id="submit-error">([^<]*)<', response.text)
    assert found and message in found.group(1).replace("&#39;", "'"), response.text[:2000]
    assert fields["spec"].replace('"', "&#34;") in response.text  # the form keeps what was typed


def test_submit_form_opens_the_job_page(ui_stack: Stack, user: TestClient, token: str) -> None:
    first = ui_stack.submit("echo", spec={"message": "first"})
    response = user.post(
        "/ui/jobs",
        data={
            "kind": "echo",
            "spec": '{"message": "from the form"}',
            "depends_on": first["id"][:8],
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    job_id = response.headers["location"].rsplit("/", 1)[-1]
    job = ui_stack.job(job_id)
    assert job["spec"]["message"] == "from the form" and job["depends_on"] == [first["id"]]
    page = user.get(f"/ui/jobs/{job_id}")
    assert f'href="/ui/jobs/{first["id"]}"' in page.text  # the dependency is linked
    assert "from the form" in page.text and "cancel-button" in page.text
    assert f'data-events="/ui/jobs/{job_id}/events?after=' in page.text
    short = user.get(f"/ui/jobs/{job_id[:10]}")  # a prefix, as the API takes
    assert short.status_code == 200
    cancelled = user.post(f"/ui/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert cancelled.status_code == 200 and "state-cancelled" in cancelled.text
    again = user.post(f"/ui/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert again.status_code == 409 and "already cancelled" in error_of(again.text)


def test_events_stream_behind_the_cookie(ui_stack: Stack, user: TestClient, token: str) -> None:
    job = ui_stack.submit("echo", spec={"message": "stream"})
    user.post(f"/ui/jobs/{job['id']}/cancel", data={"csrf_token": token})
    with user.stream("GET", f"/ui/jobs/{job['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = b"".join(response.iter_bytes()).decode()
    assert "event: state" in body and "event: end" in body and "cancelled by" in body
    anonymous = TestClient(ui_stack.api.app).get(
        f"/ui/jobs/{job['id']}/events",
        headers={"Accept": "text/event-stream"},
        follow_redirects=False,
    )
    assert anonymous.status_code in (303, 401)


def test_artifacts_download_and_inline_images(ui_stack: Stack, user: TestClient) -> None:
    job = ui_stack.submit("echo", spec={"message": "files"})
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    html = b"<script>alert(1)</script>"
    with ui_stack.runtime.transaction() as session:
        for name, data in (("plots/a.png", png), ("report.html", html)):
            key = artifact_key(job["id"], name)
            ui_stack.runtime.store.put_bytes(key, data)
            session.add(
                Artifact(
                    job_id=job["id"],
                    name=name,
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    storage_key=key,
                )
            )
    image = user.get(f"/ui/jobs/{job['id']}/artifacts/plots/a.png")
    assert image.status_code == 200 and image.content == png
    assert image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("inline")
    page = user.get(f"/ui/jobs/{job['id']}/artifacts/report.html")
    assert page.status_code == 200 and page.content == html
    assert page.headers["content-type"] == "application/octet-stream"  # never as this site's
    assert page.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in page.headers["content-security-policy"]
    assert "report.html" in user.get(f"/ui/jobs/{job['id']}").text
    assert user.get(f"/ui/jobs/{job['id']}/artifacts/../../x").status_code == 404
    assert user.get(f"/ui/jobs/{job['id']}/artifacts/").status_code == 404


GOOD_CSV = b"age,city,score,label\n31,Oulu,0.5,yes\n45,Espoo,,no\n22,Oulu,1.5,yes\n"
BAD_FILES = [
    ("empty.csv", b""),
    ("ragged.csv", b"a,b\n1,2\n3,4,5\n"),
    ("dup.csv", b"a,a\n1,2\n"),
    ("latin1.csv", "name\nJyväskylä\n".encode("latin-1")),
    ("x.bin", b"\x00\x01\x02"),
]


def test_upload_answers_as_the_api_does(ui_stack: Stack, user: TestClient, token: str) -> None:
    created = user.post(
        "/ui/datasets/upload",
        files={"file": ("people.csv", GOOD_CSV)},
        data={"name": "people"},
        headers={"X-CSRF-Token": token, "Accept": "application/json"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["url"] == "/ui/datasets/people@1"
    again = user.post(
        "/ui/datasets/upload",
        files={"file": ("people.csv", GOOD_CSV)},
        data={"name": "people"},
        headers={"X-CSRF-Token": token, "Accept": "application/json"},
    )
    assert again.status_code == 200 and again.json()["version"] == 1
    for filename, data in BAD_FILES:
        console = user.post(
            "/ui/datasets/upload",
            files={"file": (filename, data)},
            data={"name": "bad"},
            headers={"X-CSRF-Token": token, "Accept": "application/json"},
        )
        api = ui_stack.api.post(
            "/api/v1/datasets",
            files={"file": (filename, data)},
            data={"name": "bad"},
            headers=ui_stack.headers("user"),
        )
        assert 400 <= api.status_code < 500, (filename, api.text)
        assert (console.status_code, console.json()) == (api.status_code, api.json()), filename
    no_name = user.post(
        "/ui/datasets/upload",
        files={"file": ("people.csv", GOOD_CSV)},
        headers={"X-CSRF-Token": token, "Accept": "application/json"},
    )
    assert no_name.status_code == 422 and no_name.json()["detail"][0]["loc"] == ["body", "name"]


def test_dataset_page_shows_schema_preview_and_statistics(
    ui_stack: Stack, user: TestClient, token: str
) -> None:
    user.post(
        "/ui/datasets/upload",
        files={"file": ("people.csv", GOOD_CSV)},
        data={"name": "people"},
        headers={"X-CSRF-Token": token, "Accept": "application/json"},
    )
    listing = user.get("/ui/datasets")
    assert 'href="/ui/datasets/people@1"' in listing.text and "upload-form" in listing.text
    page = user.get("/ui/datasets/people@1")
    assert page.status_code == 200
    assert 'id="row-count">3<' in page.text
    assert "Espoo" in page.text and '<span class="null">null</span>' in page.text
    dataset_id = ui_stack.api.get("/api/v1/datasets/people", headers=ui_stack.headers("user"))
    stats = user.get(f"/ui/datasets/{dataset_id.json()['id']}/stats")
    assert stats.status_code == 200
    assert "32.667" in stats.text  # mean age
    assert "Oulu" in stats.text  # most frequent city
    assert user.get("/ui/datasets/people").status_code == 200  # a name: its latest
    assert "stats-rows" not in stats.text  # every row summarized


def test_column_statistics_of_the_first_rows(ui_stack: Stack, user: TestClient) -> None:
    from submitter.datasets import service
    from submitter.datasets.stats import column_stats

    user.post(
        "/ui/datasets/upload",
        files={"file": ("people.csv", GOOD_CSV)},
        data={"name": "people"},
        headers={"X-CSRF-Token": token_of_user(ui_stack), "Accept": "application/json"},
    )
    dataset = service.resolve(ui_stack.runtime, "people")
    stats, rows = column_stats(ui_stack.runtime, dataset, max_rows=2)
    assert rows == 2
    by_name = {s["name"]: s for s in stats}
    assert by_name["age"]["count"] == 2 and by_name["age"]["mean"] == 38.0
    assert by_name["city"]["dtype"] == "string" and by_name["city"]["distinct"] == 2
    assert by_name["score"]["nulls"] == 1
    empty, none = column_stats(ui_stack.runtime, dataset, max_rows=0)
    assert none == 0 and all(s["count"] == 0 for s in empty)


def test_train_form_checks_as_the_api_does(ui_stack: Stack, user: TestClient, token: str) -> None:
    user.post(
        "/ui/datasets/upload",
        files={"file": ("people.csv", GOOD_CSV)},
        data={"name": "people"},
        headers={"X-CSRF-Token": token, "Accept": "application/json"},
    )
    form = user.get("/ui/train?dataset=people")
    assert form.status_code == 200
    assert '<option value="people@1" selected>' in form.text
    assert '<option value="label" selected>' in form.text  # the last column
    targets = user.get("/ui/train/targets?dataset=people@1")
    assert '<option value="city">' in targets.text
    assert "pick a dataset" in user.get("/ui/train/targets?dataset=nothing").text
    for fields, message in (
        ({"dataset": "people@1", "target": "nope"}, "is not a column of the dataset"),
        ({"dataset": "nothing", "target": "x"}, "no dataset"),
        ({"dataset": "people@1", "target": "label", "folds": "many"}, "folds"),
        ({"dataset": "people@1", "target": "label", "folds": "1"}, "folds"),
        ({"dataset": "people@1", "target": "label", "models": "nope"}, "unknown model"),
        ({"dataset": "people@1", "target": "label", "model_name": "a b"}, "model_name"),
    ):
        data = {"model_name": "people", **fields, "csrf_token": token}
        response = user.post("/ui/train", data=data, follow_redirects=False)
        assert response.status_code == 422, fields
        found = re.search(r'id="train-error">([^<]*)<', response.text)
        assert found and message in found.group(1), (fields, found and found.group(1))
    response = user.post(
        "/ui/train",
        data={
            "dataset": "people@1",
            "target": "label",
            "model_name": "people",
            "models": ["lr", "dt"],
            "folds": "2",
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    job = ui_stack.job(response.headers["location"].rsplit("/", 1)[-1])
    assert job["kind"] == "train" and job["spec"]["models"] == ["lr", "dt"]
    assert job["spec"]["folds"] == 2


def test_model_forms_on_unknown_models(user: TestClient, token: str) -> None:
    for path, data in (
        ("/ui/models/nothing/aliases", {"version": "1"}),
        ("/ui/models/nothing/aliases", {"version": "zero"}),
        ("/ui/models/nothing/predict", {"version": "1", "rows": "a\n1\n"}),
    ):
        response = user.post(path, data={**data, "csrf_token": token})
        assert response.status_code == 404, path
        assert "nothing" in response.text


@pytest.fixture(scope="module")
def model(ui_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registered version of `people-model`, trained here (no worker in this module) on a
    small dataset uploaded for it."""
    import pandas as pd

    from submitter.ml import save, train
    from submitter.registry.service import register_version

    frame = pd.DataFrame(
        {
            "age": [20 + (i * 7) % 50 for i in range(60)],
            "city": [("Oulu", "Espoo", "Turku")[i % 3] for i in range(60)],
            "score": [((i * 13) % 17) / 4 for i in range(60)],
            "label": ["yes" if (i * 7) % 50 > 20 else "no" for i in range(60)],
        }
    )
    csv = frame.to_csv(index=False).encode()
    uploaded = ui_stack.api.post(
        "/api/v1/datasets",
        files={"file": ("people-model.csv", csv)},
        data={"name": "people-model"},
        headers=ui_stack.headers("user"),
    )
    assert uploaded.status_code in (200, 201), uploaded.text
    result = train(frame, "label", models=["lr"], folds=2, n_jobs=1)
    path = tmp_path_factory.mktemp("model") / "model.skops"
    save(result.pipeline, path)
    register_version(
        ui_stack.runtime,
        name="people-model",
        model_file=path,
        fields={
            "task": result.task,
            "algorithm": result.best_model,
            "metric": result.metric,
            "metrics": {"cv": result.leaderboard[0], "holdout": result.holdout_metrics},
            "leaderboard": result.leaderboard,
            "params": {},
            "feature_schema": result.feature_schema,
            "classes": result.classes,
            "target": "label",
            "dataset_id": uploaded.json()["id"],
            "job_id": None,
        },
    )
    return "people-model"


def test_model_page_promote_and_predict(user: TestClient, token: str, model: str) -> None:
    page = user.get(f"/ui/models/{model}")
    assert page.status_code == 200
    assert 'id="leaderboard"' in page.text and "people-model@1" in page.text
    assert "age,city,score\n" in page.text  # the predict form's example: the features
    assert "No plots for this version." in page.text
    listing = user.get("/ui/models")
    assert f'href="/ui/models/{model}"' in listing.text
    refused = user.post(
        f"/ui/models/{model}/aliases",
        data={"version": "1", "alias": "Not An Alias", "csrf_token": token},
    )
    assert refused.status_code == 422 and "alias:" in refused.text
    promoted = user.post(
        f"/ui/models/{model}/aliases",
        data={"version": "1", "alias": "staging", "csrf_token": token},
        follow_redirects=False,
    )
    assert promoted.status_code == 303
    assert promoted.headers["location"] == f"/ui/models/{model}/versions/1"
    shown = user.get(promoted.headers["location"])
    assert '<span class="chip alias">staging</span>' in shown.text
    assert (
        user.post(
            f"/ui/models/{model}/aliases", data={"version": "2", "csrf_token": token}
        ).status_code
        == 404
    )
    predicted = user.post(
        f"/ui/models/{model}/predict",
        data={
            "version": "1",
            "rows": "age,city,score\n30,Oulu,1.5\n61,Helsinki,\n",
            "csrf_token": token,
        },
        headers={"HX-Request": "true"},
    )
    assert predicted.status_code == 200, predicted.text
    assert predicted.text.count("<strong>") == 2 and "p(yes)" in predicted.text


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("", "give a header line and at least one row"),
        ("age,city,score\n", "give a header line and at least one row"),
        ("age,city,score\n1,2\n", "row 1 has 2 values for 3 columns"),
        ("age,city,score\n30,Oulu,inf\n", "is not a finite number"),
        ("age,city\n30,Oulu\n", "score: missing column"),
        ("age,city,score,extra\n30,Oulu,1,2\n", "extra"),
        ("age,city,score\nthirty,Oulu,1\n", "age"),
        ("age,city,score\n" + "30,Oulu,1\n" * 101, "at most 100 rows"),
    ],
)
def test_predict_form_says_what_is_wrong(
    user: TestClient, token: str, model: str, rows: str, message: str
) -> None:
    response = user.post(
        f"/ui/models/{model}/predict",
        data={"version": "1", "rows": rows, "csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 422, response.text
    found = re.search(r'id="predict-error">([^<]*)<', response.text)
    assert found and message in found.group(1).replace("&#39;", "'"), found and found.group(1)
