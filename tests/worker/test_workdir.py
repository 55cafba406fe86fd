"""`Workdir`, a job's scratch folder: made on first use only, removed once, made afresh if
used after removal (the beat thread may remove it while a stuck run still writes)."""

from __future__ import annotations

import stat
import threading

from submitter.jobs.context import Workdir


def test_nothing_is_made_until_the_folder_is_used() -> None:
    scratch = Workdir(prefix="submitter-test-")
    assert scratch.made is None
    scratch.remove()  # nothing to remove: no error
    assert scratch.made is None


def test_the_folder_is_private_stable_and_removed() -> None:
    scratch = Workdir(prefix="submitter-test-")
    path = scratch.path
    assert path.is_dir() and path.name.startswith("submitter-test-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert scratch.path == path and scratch.made == path
    (path / "sub").mkdir()
    (path / "sub" / "file.txt").write_text("x")
    scratch.remove()
    assert not path.exists() and scratch.made is None


def test_a_use_after_removal_makes_a_new_folder_that_the_next_removal_takes() -> None:
    scratch = Workdir(prefix="submitter-test-")
    first = scratch.path
    scratch.remove()
    second = scratch.path
    assert second != first and second.is_dir()
    scratch.remove()
    assert not second.exists()


def test_threads_racing_for_the_folder_get_one_folder() -> None:
    scratch = Workdir(prefix="submitter-test-")
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(scratch.path)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 1
    scratch.remove()
