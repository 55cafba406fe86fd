"""The embedded broker (kombu's SQLAlchemy transport on SQLite, our subclass): processes that
start together on a fresh broker file all get the queue, none stops on the insert race."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

# Each process waits for the same instant, then creates the broker tables and the queue
# (kombu does both on first use) and sends one message.
DECLARE = """
import sys, time
from kombu import Connection
import submitter.worker.sqlite_broker as broker
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
with Connection(broker.broker_url("sqla+sqlite:///" + sys.argv[1])) as connection:
    queue = connection.SimpleQueue("race")
    queue.put({"from": sys.argv[3]})
    queue.close()
"""


def test_processes_starting_together_share_the_new_queue(tmp_path: Path) -> None:
    broker_file = tmp_path / "broker.db"
    for attempt in range(3):  # the race is a matter of timing: give it several chances
        broker_file.unlink(missing_ok=True)
        start = time.time() + 3
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", DECLARE, str(broker_file), str(start), f"{attempt}-{n}"],
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(6)
        ]
        failures = [p.communicate(timeout=60)[1] for p in processes if p.wait(60) != 0]
        assert failures == [], failures[0]
    from kombu import Connection

    from submitter.worker.sqlite_broker import broker_url

    with Connection(broker_url(f"sqla+sqlite:///{broker_file}")) as connection:
        queue = connection.SimpleQueue("race")
        assert len(queue) == 6
        queue.close()
