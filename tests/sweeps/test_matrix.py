"""Filling templates from a matrix, flattening results (pure functions)."""

from __future__ import annotations

from submitter.sweeps.matrix import combinations, count, fill, placeholders
from submitter.sweeps.results import flatten, sort_key


def test_combinations_first_parameter_slowest() -> None:
    matrix = {"model": ["lr", "rf"], "fold": [0, 1, 2]}
    combos = combinations(matrix)
    assert count(matrix) == len(combos) == 6
    assert combos[0] == {"model": "lr", "fold": 0} and combos[3] == {"model": "rf", "fold": 0}


def test_fill_keeps_types_of_whole_placeholders_and_formats_inside_strings() -> None:
    template = {
        "message": "lr={{lr}} model={{ model }}",
        "sleep_seconds": "{{lr}}",
        "models": ["{{model}}"],
        "flag": "{{on}}",
        "nested": {"{{lr}}": "{{missing}}"},
    }
    filled = fill(template, {"lr": 0.5, "model": "rf", "on": True})
    assert filled["message"] == "lr=0.5 model=rf"
    assert filled["sleep_seconds"] == 0.5 and filled["flag"] is True
    assert filled["models"] == ["rf"]
    assert filled["nested"] == {"{{lr}}": "{{missing}}"}  # keys never; unknown names stay
    assert placeholders(template) == {"lr", "model", "on", "missing"}


def test_flatten_numbers_by_dotted_name() -> None:
    result = {"cv": {"roc_auc": 0.9, "name": "x"}, "n": 3, "ok": True, "list": [1], "nan": 1e400}
    assert flatten(result) == {"cv.roc_auc": 0.9, "n": 3.0}
    assert sort_key("-loss") == ("loss", True) and sort_key("acc") == ("acc", False)
