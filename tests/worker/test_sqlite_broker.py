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


def test_one_channel_used_from_two_threads_keeps_its_session_sound(tmp_path: Path) -> None:
    """A worker's consumer thread polls (`_get`) while a pool thread hands a message back
    (`_put`, Celery's reject-and-requeue of a job whose pool process died) on one channel:
    kombu's one session broke ("IllegalStateChangeError") within a few hundred calls."""
    import threading
    from queue import Empty

    from kombu import Connection

    from submitter.worker.sqlite_broker import broker_url

    putters, puts = 2, 60
    errors: list[BaseException] = []
    got: list[object] = []
    with Connection(broker_url(f"sqla+sqlite:///{tmp_path / 'broker.db'}")) as connection:
        channel = connection.channel()
        channel._new_queue("shared")
        puts_left = threading.Semaphore(0)

        def put(first: int) -> None:
            try:
                for n in range(first, first + puts):
                    channel._put("shared", {"n": n})
            except BaseException as error:
                errors.append(error)
            finally:
                puts_left.release()

        def get() -> None:
            try:
                done = 0
                for _ in range(50 * putters * puts):  # bounded: far more polls than messages
                    try:
                        got.append(channel._get("shared"))
                    except Empty:
                        done += puts_left.acquire(blocking=False)
                        if done == putters:
                            return
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=put, args=(p * puts,)) for p in range(putters)]
        threads.append(threading.Thread(target=get))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == [], repr(errors[0])
        assert sorted(message["n"] for message in got) == list(range(putters * puts))  # type: ignore[index]
        channel.close()
