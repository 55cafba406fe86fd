"""Progress a run function reports goes forward only (submitter.worker.runner.PendingWrites)."""

from __future__ import annotations

from submitter.worker.runner import PendingWrites


def test_a_report_behind_the_highest_is_dropped_with_its_message() -> None:
    pending = PendingWrites()
    pending.set_progress(0.84, "lightgbm fold 2/5", "training")
    pending.set_progress(0.80, "lightgbm fold 1/5", None)  # a slower thread, reported late
    assert pending.take()[1] == {
        "progress": 0.84,
        "message": "lightgbm fold 2/5",
        "phase": "training",
    }
    pending.set_progress(0.82, "lightgbm fold 3/5", None)  # still behind, after a write
    assert pending.take()[1] == {}
    pending.set_progress(0.9, "lightgbm fold 4/5", None)
    pending.set_progress(None, "registering", "registering")  # no fraction: always kept
    assert pending.take()[1] == {"progress": 0.9, "message": "registering", "phase": "registering"}
