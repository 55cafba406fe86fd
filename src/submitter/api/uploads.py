"""Streaming multipart uploads: the file part goes to disk as it arrives, hashed and counted.

Starlette's form parsing reads the whole body (into a spooled file) before a handler
runs, so it cannot stop an oversized upload. Here the body is parsed chunk by chunk with
python-multipart's low-level parser: the file part is written to disk and hashed while it
streams, and reading stops the moment it passes the size limit (413), so a 50 GB upload
costs us at most the limit in disk and nothing in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 64 * 1024
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file's bytes


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"upload larger than the limit of {limit} bytes (SUBMITTER_MAX_UPLOAD_BYTES)"
        )


@dataclass
class BadUpload(ValueError):
    field: str
    reason: str


@dataclass
class Upload:
    path: Path
    filename: str | None
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)


class _Receiver:
    """Callbacks for MultipartParser: one file part to disk, small text fields to memory."""

    def __init__(self, target: Path, file_field: str, limit: int) -> None:
        self.target = target
        self.file_field = file_field
        self.limit = limit
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self.digest = hashlib.sha256()
        self.got_file = False
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._buffer = bytearray()
        self._file: IO[bytes] | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._buffer = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == self.file_field:
            if self.got_file:
                raise BadUpload(self.file_field, "send exactly one file part")
            self.got_file = True
            raw = options.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw is not None else None
            self._file = self.target.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            self.size += len(chunk)
            if self.size > self.limit:
                raise UploadTooLarge(self.limit)
            self.digest.update(chunk)
            self._file.write(chunk)
        else:
            self._buffer += chunk
            if len(self._buffer) > MAX_FIELD_BYTES:
                raise BadUpload(self._name or "form", f"field over {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._name:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def receive_upload(
    request: Request, target: Path, limit: int, file_field: str = "file"
) -> Upload:
    """Read a multipart/form-data body; write its `file_field` part to `target`."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise BadUpload(file_field, "send multipart/form-data with a 'file' part")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise UploadTooLarge(limit)
    receiver = _Receiver(target, file_field, limit)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as error:
        raise BadUpload("file", f"not a readable multipart/form-data body: {error}") from None
    finally:
        receiver.close()
    if not receiver.got_file:
        raise BadUpload(file_field, "missing: send the data as a 'file' part")
    return Upload(
        path=target,
        filename=receiver.filename,
        size=receiver.size,
        sha256=receiver.digest.hexdigest(),
        fields=receiver.fields,
    )
