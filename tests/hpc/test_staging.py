"""Targets and collect patterns stay inside the job folder; glob matching is ours."""

from __future__ import annotations

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
