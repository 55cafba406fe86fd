"""Files in and out of a SLURM job's folder: datasets, artifacts and inline text go in,
files matching the collect patterns (and SLURM's own output) come back.

Every target and pattern is relative to the job folder and checked with `safe_name` (no
absolute paths, no `..`, no control characters); matching happens here, on the listed
paths, so a pattern is never handed to a remote shell to expand.
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from submitter.hpc.transport import RemoteFile, Transport
from submitter.storage.keys import InvalidName, safe_name

if TYPE_CHECKING:
    from submitter.datasets.limits import DatasetLimits
    from submitter.storage import ArtifactStore

#: Submitter's own files inside the job folder; user targets may not go there.
CONTROL_DIR = ".submitter"
MAX_COLLECTED_FILES = 10_000


def jobs_root(base: str) -> str:
    """Where job folders live under a cluster's (expanded) workdir."""
    return f"{base}/submitter"


def job_folder(base: str, job_id: str) -> str:
    return f"{jobs_root(base)}/{job_id}"


def check_target(target: str) -> str:
    """A provide target: a relative path inside the job folder, outside `.submitter/`."""
    name = safe_name(target)
    if name.split("/", 1)[0] == CONTROL_DIR:
        raise InvalidName(f"{CONTROL_DIR}/ is Submitter's own folder")
    return name


def check_pattern(pattern: str) -> str:
    """A collect pattern: like a target, with `*`, `?` and `**` allowed."""
    return safe_name(pattern)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Glob → regex: `*` and `?` stay inside one folder, `**/` spans folders."""
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out) + r"\Z")


def select_files(files: Iterable[RemoteFile], patterns: Iterable[str]) -> list[RemoteFile]:
    """The files matching any pattern, never Submitter's own control files."""
    regexes = [pattern_regex(p) for p in patterns]
    chosen = []
    for remote in files:
        if remote.path.split("/", 1)[0] == CONTROL_DIR:
            continue
        if any(r.match(remote.path) for r in regexes):
            chosen.append(remote)
            if len(chosen) >= MAX_COLLECTED_FILES:
                break
    return chosen


@dataclass(frozen=True)
class Upload:
    """One file to put into the job folder: its target and where its bytes come from."""

    target: str
    inline: str | None = None
    store_key: str | None = None
    as_csv: bool = False


def put_upload(
    transport: Transport,
    store: ArtifactStore,
    folder: str,
    upload: Upload,
    limits: DatasetLimits | None = None,
) -> int:
    """Put one file into the job folder; return its size in bytes. A dataset staged as CSV
    is decoded within `limits` (the same bounds as every other reader of datasets)."""
    target = f"{folder}/{upload.target}"
    parent = target.rsplit("/", 1)[0]
    transport.makedirs(parent)
    if upload.inline is not None:
        data = upload.inline.encode()
        transport.put(io.BytesIO(data), target)
        return len(data)
    assert upload.store_key is not None
    with tempfile.TemporaryDirectory(prefix="submitter-stage-") as scratch:
        local = Path(scratch) / "data"
        store.download(upload.store_key, local)
        if upload.as_csv:
            local = _parquet_to_csv(local, Path(scratch) / "data.csv", limits)
        with open(local, "rb") as source:
            transport.put(source, target)
        return local.stat().st_size


def _parquet_to_csv(parquet: Path, csv: Path, limits: DatasetLimits | None = None) -> Path:
    """A dataset staged under a `.csv` target is written as CSV, batch by batch."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from submitter.datasets.limits import BoundedParquetFile

    source = (
        pq.ParquetFile(parquet)
        if limits is None
        else BoundedParquetFile(str(parquet), limits=limits)
    )
    with pacsv.CSVWriter(str(csv), source.schema_arrow) as writer:
        for batch in source.iter_batches():
            writer.write_batch(batch)
    return csv
