"""safe_name / join_key / check_key: what user-given names may and may not be."""

from __future__ import annotations

import pytest

from submitter.storage import InvalidName, check_key, join_key, safe_name

# (name, a word the refusal message must contain)
BAD_NAMES = [
    ("../x", "'..'"),
    ("a/../../x", "'..'"),
    ("/etc/passwd", "absolute"),
    ("a\\b", "backslash"),
    ("a\x00b", "control character"),
    ("a\nb", "control character"),
    ("a\rb", "control character"),
    ("a\x7fb", "control character"),
    ("a\u2028b", "control character"),
    ("..", "'..'"),
    (".", "'.'"),
    ("", "empty"),
    ("x" * 300, "bytes"),
    ("é" * 200, "bytes"),  # 200 characters but 400 UTF-8 bytes
    ("a//b", "empty path segment"),
    ("a/", "empty path segment"),
    ("a/./b", "'.'"),
    ("\ud800", "Unicode"),
    (".submitter-meta", "reserved"),
]


@pytest.mark.parametrize(("name", "reason"), BAD_NAMES, ids=repr)
def test_safe_name_refuses(name: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=reason) as info:
        safe_name(name)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidName):
        join_key("jobs", "j1", "artifacts", name)


@pytest.mark.parametrize(
    "name", ["model.pt", "plots/loss curve.png", "données.csv", ".hidden", "a..b", "x" * 255]
)
def test_safe_name_accepts_and_keeps(name: str) -> None:
    assert safe_name(name) == name
    assert check_key(join_key("jobs", 7, name)) == f"jobs/7/{name}"


def test_single_segment() -> None:
    assert safe_name("iris", single_segment=True) == "iris"
    with pytest.raises(InvalidName, match="'/'"):
        safe_name("iris/v2", single_segment=True)


def test_join_key_limits() -> None:
    assert join_key("datasets", 12, "data.parquet") == "datasets/12/data.parquet"
    with pytest.raises(InvalidName):
        join_key()
    with pytest.raises(InvalidName):
        join_key("a", None)  # type: ignore[arg-type]
    with pytest.raises(InvalidName, match="1024"):
        join_key(*(["x" * 200] * 6))  # each part fine, the whole key over S3's 1024 bytes
