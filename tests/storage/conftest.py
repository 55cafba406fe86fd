"""Fixtures: every store test runs on a LocalStore (tmp dir) and an S3Store (moto server)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from submitter.config import load_settings
from submitter.storage import ArtifactStore, LocalStore, S3Store, open_store
from tests.services import s3_server

S3_PREFIX = "deployments/test"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One moto S3 server process for the whole test session."""
    with s3_server() as url:
        yield url


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials; nothing from the developer's own AWS setup leaks in."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "submitter-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "submitter-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_client(s3_endpoint: str, aws_env: None) -> Any:
    """A plain boto3 client on the moto server, to look at what the store wrote."""
    return boto3.client(
        "s3", endpoint_url=s3_endpoint, config=Config(s3={"addressing_style": "path"})
    )


@pytest.fixture
def bucket(s3_client: Any) -> Iterator[str]:
    """A fresh bucket per test, emptied and removed afterwards."""
    name = f"submitter-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for entry in page.get("Contents", []):
            s3_client.delete_object(Bucket=name, Key=entry["Key"])
    s3_client.delete_bucket(Bucket=name)


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if kind == "local":
        url = (tmp_path / "store").as_uri()
        return open_store(load_settings(home=tmp_path / "home", storage_url=url))
    bucket_name = request.getfixturevalue("bucket")
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_store(
        load_settings(
            home=tmp_path / "home",
            storage_url=f"s3://{bucket_name}/{S3_PREFIX}",
            s3_endpoint_url=endpoint,
        )
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    return make_store(request.param, request, tmp_path)


@pytest.fixture
def local_store(request: pytest.FixtureRequest, tmp_path: Path) -> LocalStore:
    store = make_store("local", request, tmp_path)
    assert isinstance(store, LocalStore)
    return store


@pytest.fixture
def s3_store(request: pytest.FixtureRequest, tmp_path: Path) -> S3Store:
    store = make_store("s3", request, tmp_path)
    assert isinstance(store, S3Store)
    return store
