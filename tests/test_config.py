"""Settings: environment, YAML file, defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from submitter.config import ConfigError, load_settings, parse_scheduler_times


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SUBMITTER_"):
            monkeypatch.delenv(key)


def test_defaults_are_the_embedded_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBMITTER_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.db_url == f"sqlite:///{tmp_path}/submitter.db"
    assert settings.broker == f"sqla+sqlite:///{tmp_path}/broker.db"
    assert settings.storage_url == (tmp_path / "artifacts").as_uri()
    assert settings.api_port == 7500
    assert settings.is_embedded_db


def test_yaml_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "submitter.yaml"
    config.write_text(
        "api_port: 8100\njob_max_attempts: 5\n"
        "clusters:\n  - name: puhti\n    transport: local\n    workdir: /scratch/p\n"
    )
    monkeypatch.setenv("SUBMITTER_CONFIG", str(config))
    monkeypatch.setenv("SUBMITTER_API_PORT", "8200")
    settings = load_settings()
    assert settings.api_port == 8200
    assert settings.job_max_attempts == 5
    assert [(c.name, c.transport, c.workdir) for c in settings.clusters] == [
        ("puhti", "local", "/scratch/p")
    ]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("- {name: a, workdir: /w}", "transport ssh needs host, user, key_file, known_hosts"),
        ("- {name: 'a b', transport: local, workdir: /w}", "letters, digits"),
        ("- {name: a, transport: local, workdir: rel/dir}", "absolute path"),
        ("- {name: a, transport: local, workdir: /w, password: x}", "Extra inputs"),
        (
            "- {name: a, transport: local, workdir: /w}\n"
            "- {name: a, transport: local, workdir: /v}",
            "unique",
        ),
    ],
)
def test_bad_cluster_entries_are_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, words: str
) -> None:
    config = tmp_path / "clusters.yaml"
    config.write_text("clusters:\n" + entry + "\n")
    monkeypatch.setenv("SUBMITTER_CONFIG", str(config))
    with pytest.raises(ConfigError, match="SUBMITTER_CLUSTERS") as raised:
        load_settings()
    assert words in str(raised.value)


def test_bad_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBMITTER_API_PORT", "lots")
    with pytest.raises(ConfigError, match="SUBMITTER_API_PORT"):
        load_settings()


def test_unknown_yaml_key_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("api_prot: 1\n")
    monkeypatch.setenv("SUBMITTER_CONFIG", str(config))
    with pytest.raises(ConfigError, match="SUBMITTER_API_PROT"):
        load_settings()


def test_missing_yaml_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBMITTER_CONFIG", "/nonexistent/submitter.yaml")
    with pytest.raises(ConfigError, match="SUBMITTER_CONFIG"):
        load_settings()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SUBMITTER_DATABASE_URL", "not-a-url"),
        ("SUBMITTER_STORAGE_URL", "ftp://x"),
        ("SUBMITTER_LOG_LEVEL", "LOUD"),
        ("SUBMITTER_JOB_LEASE_SECONDS", "0"),
        ("SUBMITTER_SCHEDULER_TIMES", "5|x"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=key):
        load_settings()


def test_postgres_url_uses_psycopg3() -> None:
    settings = load_settings(database_url="postgresql://u@h:5432/db")
    assert settings.db_url == "postgresql+psycopg://u@h:5432/db"


def test_scheduler_times_positional_and_named() -> None:
    defaults = {"reconcile": 10.0, "hpc_monitor": 30.0, "schedules": 1.0, "hpc_cleanup": 600.0}
    assert parse_scheduler_times("5") == {**defaults, "reconcile": 5.0}
    assert parse_scheduler_times("5|60") == {**defaults, "reconcile": 5.0, "hpc_monitor": 60.0}
    assert parse_scheduler_times("5|60|2|9") == {
        "reconcile": 5,
        "hpc_monitor": 60,
        "schedules": 2,
        "hpc_cleanup": 9,
    }
    assert parse_scheduler_times("hpc_monitor=7") == {**defaults, "hpc_monitor": 7.0}
    for bad in ("0", "1|2|3|4|5", "nightly=5", "-1"):
        with pytest.raises(ValueError):
            parse_scheduler_times(bad)
