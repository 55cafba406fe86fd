"""The roles an API key has. Its own module, free of the database, because the CLI needs
it to declare `keys create --role` and must start without importing SQLAlchemy."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    admin = "admin"
    user = "user"
    viewer = "viewer"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "user": 1, "admin": 2}[self.value]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank
