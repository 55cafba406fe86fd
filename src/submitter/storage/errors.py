"""Errors of the artifact store. All derive from `StorageError`."""

from __future__ import annotations


class StorageError(Exception):
    """Something went wrong in the artifact store."""


class NotFound(StorageError, KeyError):
    """No object with this key (also a `KeyError`)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:  # KeyError would print just the quoted key
        return f"no object with key {self.key!r}"


class InvalidName(StorageError, ValueError):
    """A name or key is refused; the message says why (also a `ValueError`)."""


class StoreUnavailable(StorageError):
    """The store cannot be used at all: unreachable, missing bucket, unwritable folder."""
