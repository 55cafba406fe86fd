"""Filling a spec template from a parameter matrix (pure functions, unit-tested).

A placeholder is `{{name}}`. Inside a longer string it is replaced by the value's text; a
string that is *only* a placeholder becomes the value itself, keeping its JSON type, so
`"n_estimators": "{{trees}}"` with `trees: [100, 200]` gives the integers 100 and 200.
Placeholders are filled in values, never in keys: a template cannot grow new fields.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
WHOLE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}$")


def combinations(matrix: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, the first parameter varying slowest (as nested loops would)."""
    names = list(matrix)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*matrix.values())]


def count(matrix: dict[str, list[Any]]) -> int:
    total = 1
    for values in matrix.values():
        total *= len(values)
    return total


def placeholders(template: Any) -> set[str]:
    """The names the template uses."""
    if isinstance(template, str):
        return set(PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return set().union(*(placeholders(v) for v in template.values())) if template else set()
    if isinstance(template, list):
        return set().union(*(placeholders(v) for v in template)) if template else set()
    return set()


def fill(template: Any, params: dict[str, Any]) -> Any:
    """The template with every placeholder replaced (unknown names are left as they are:
    the caller checks `placeholders` against the matrix first)."""
    if isinstance(template, str):
        whole = WHOLE.match(template)
        if whole and whole.group(1) in params:
            return params[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: _text(params, m), template)
    if isinstance(template, dict):
        return {key: fill(value, params) for key, value in template.items()}
    if isinstance(template, list):
        return [fill(value, params) for value in template]
    return template


def _text(params: dict[str, Any], match: re.Match[str]) -> str:
    name = match.group(1)
    if name not in params:
        return match.group(0)
    value = params[name]
    return value if isinstance(value, str) else json.dumps(value)


def label(params: dict[str, Any]) -> str:
    """`model=rf, fold=2`: how a child is named in logs and errors."""
    return ", ".join(
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in params.items()
    )
