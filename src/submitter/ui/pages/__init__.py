"""The console's pages: one module per resource, found here at start-up.

A page module has a `router` (an `APIRouter` with `include_in_schema=False`, prefix
`/ui/<resource>`) and, to appear in the navigation bar, `NAV = NavItem(...)`. Its templates
live in `templates/<resource>/` and extend `base.html`. Adding a page is adding that module
and its templates: nothing else lists them.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def modules() -> list[ModuleType]:
    """Every page module of this package, in name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found.append(importlib.import_module(f"{__name__}.{info.name}"))
    return found
