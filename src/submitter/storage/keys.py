"""Object keys: validation of user-given names and building keys from parts.

A key is a relative POSIX-style path: segments separated by ``/``. Both stores accept only
keys that pass `check_key`, so a key can never point outside its store (or S3 prefix):

* not empty, valid Unicode (no lone surrogates), at most 1024 UTF-8 bytes (the S3 limit);
* no control characters (C0, DEL, C1, including NUL and newlines; also U+2028/U+2029);
* no backslash, no leading ``/`` (absolute path), no empty segment (``a//b``, trailing ``/``);
* no ``.`` or ``..`` segment, no segment over 255 UTF-8 bytes (the file-name limit);
* no segment starting with ``.submitter-`` (reserved for the local store's temp files and
  checksum sidecars).

Nothing is normalised silently: a name that would need normalising is refused. As a last
check the key must equal its `posixpath.normpath` and stay relative.
"""

from __future__ import annotations

import posixpath
import unicodedata

from submitter.storage.errors import InvalidName

MAX_NAME_BYTES = 255
MAX_KEY_BYTES = 1024
RESERVED_PREFIX = ".submitter-"

_BAD_CATEGORIES = {"Cc", "Zl", "Zp"}  # control characters, line and paragraph separators


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:57]) + "..."


def _check(text: object, what: str, limit: int) -> str:
    if not isinstance(text, str):
        raise InvalidName(f"{what} must be a string, not {type(text).__name__}")
    if not text:
        raise InvalidName(f"{what} is empty")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidName(f"{what} {_shown(text)} is not valid Unicode text") from None
    if size > limit:
        raise InvalidName(f"{what} is {size} bytes long (UTF-8); at most {limit} are allowed")
    for char in text:
        if unicodedata.category(char) in _BAD_CATEGORIES:
            raise InvalidName(f"{what} {_shown(text)} contains the control character {char!r}")
    if "\\" in text:
        raise InvalidName(f"{what} {_shown(text)} contains a backslash")
    if text.startswith("/"):
        raise InvalidName(f"{what} {_shown(text)} is an absolute path")
    for segment in text.split("/"):
        if not segment:
            raise InvalidName(
                f"{what} {_shown(text)} has an empty path segment ('//' or '/' at the end)"
            )
        if segment in (".", ".."):
            raise InvalidName(f"{what} {_shown(text)} has a {segment!r} path segment")
        if len(segment.encode("utf-8")) > MAX_NAME_BYTES:
            raise InvalidName(f"{what} has a path segment over {MAX_NAME_BYTES} bytes (UTF-8)")
        if segment.startswith(RESERVED_PREFIX):
            raise InvalidName(
                f"{what} {_shown(text)}: names starting with {RESERVED_PREFIX!r} are reserved"
            )
    # Defence in depth: the rules above already make this impossible.
    normal = posixpath.normpath(text)
    if normal != text or posixpath.isabs(normal) or normal.split("/", 1)[0] == "..":
        raise InvalidName(f"{what} {_shown(text)} escapes its prefix after normalisation")
    return text


def safe_name(name: str, *, single_segment: bool = False) -> str:
    """Return a user-given ``name`` unchanged if it is safe in a key; else raise `InvalidName`.

    A name may contain ``/`` (a relative path such as ``plots/loss.png``) unless
    ``single_segment``; the whole name is at most 255 UTF-8 bytes.
    """
    checked = _check(name, "name", MAX_NAME_BYTES)
    if single_segment and "/" in checked:
        raise InvalidName(f"name {_shown(checked)} must not contain '/'")
    return checked


def check_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid object key; else raise `InvalidName`."""
    return _check(key, "key", MAX_KEY_BYTES)


def join_key(*parts: str | int) -> str:
    """Join key parts with ``/``, each checked like a key (ints, e.g. ids, are allowed).

    ``join_key("jobs", 42, "artifacts", name)`` -> ``"jobs/42/artifacts/<name>"``.
    """
    if not parts:
        raise InvalidName("a key needs at least one part")
    texts: list[str] = []
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, str | int):
            raise InvalidName(f"key part must be a string or an int, not {type(part).__name__}")
        texts.append(_check(str(part), "key part", MAX_KEY_BYTES))
    return check_key("/".join(texts))
