"""Targets and collect patterns stay inside the job folder; glob matching is ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from submitter.hpc.staging import check_pattern, check_target, select_files
from submitter.hpc.transport import RemoteFile
from submitter.storage.keys import InvalidName


@pytest.mark.parametrize(
    "target",
    ["/etc/passwd", "../x", "a/../../x", "~/x/../../y", ".submitter/job.sbatch", "a\nb", ""],
)
def test_targets_outside_the_job_folder_are_refused(target: str) -> None:
    with pytest.raises(InvalidName):
        check_target(target)


@pytest.mark.parametrize("target", ["data/in.csv", "it's $(x).txt", "a b/c;d"])
def test_odd_but_harmless_targets_are_kept_verbatim(target: str) -> None:
    assert check_target(target) == target


def test_patterns() -> None:
    files = [
        RemoteFile(p, 1)
        for p in [
            "out/a.txt",
            "out/sub/b.txt",
            "out/c.csv",
            "top.txt",
            "slurm-5.out",
            ".submitter/times",
        ]
    ]

    def chosen(*patterns: str) -> list[str]:
        return [f.path for f in select_files(files, patterns)]

    assert chosen("out/*.txt") == ["out/a.txt"]
    assert chosen("out/**/*.txt") == ["out/a.txt", "out/sub/b.txt"]
    assert chosen("*.txt") == ["top.txt"]
    assert chosen("**") == ["out/a.txt", "out/sub/b.txt", "out/c.csv", "top.txt", "slurm-5.out"]
    assert chosen("out/?.csv") == ["out/c.csv"]
    with pytest.raises(InvalidName):
        check_pattern("../*")


def test_a_dataset_staged_as_csv_is_read_within_the_dataset_limits(tmp_path: Path) -> None:
    """Staging is one more reader of stored datasets: the same bounds hold."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from submitter.datasets.limits import DatasetLimits, LimitExceeded
    from submitter.hpc.staging import _parquet_to_csv

    limits = DatasetLimits(cell_bytes=1024)
    fine, bomb = tmp_path / "fine.parquet", tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), fine)
    pq.write_table(pa.table({"a": [1], "b": ["z" * 100_000]}), bomb)
    out = _parquet_to_csv(fine, tmp_path / "fine.csv", limits)
    assert out.read_text().splitlines() == ['"a","b"', '1,"x"', '2,"y"']
    with pytest.raises(LimitExceeded):
        _parquet_to_csv(bomb, tmp_path / "bomb.csv", limits)
