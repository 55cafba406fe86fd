"""Names users give to datasets and models, and the error that says which input is wrong.

One rule for both: they appear in URLs (`/datasets/credit@2`, `/models/credit/predict`),
in CLI arguments and in logs, so they stay short and plain. `@` is the version separator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NAME_RULE = "1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"


@dataclass
class FieldError(ValueError):
    """A request is refused; `field` names the input, `reason` says why (answered as 422)."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None
