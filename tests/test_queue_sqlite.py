"""SQLite queue specifics: several processes on one file, deduplication that outlives
deletion, long polling without a busy loop, and sharing the file with other adapters."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from support import FakeClock

from raasctl.codes import ErrorCode
from raasctl.errors import QueueError
from raasctl.queues.base import OutgoingMessage, ReceivedMessage
from raasctl.queues.sqlite import SqliteQueue


def message(body: str, group: str = "G", dedup: str | None = None) -> OutgoingMessage:
    return OutgoingMessage(body=body, group_id=group, dedup_id=dedup or f"d-{body}")


def fill(queue: SqliteQueue, count: int, groups: int) -> list[str]:
    bodies = [f"m{n}" for n in range(count)]
    for start in range(0, count, 10):
        queue.send_batch(
            [
                message(b, group=f"G{n % groups}")
                for n, b in enumerate(bodies[start : start + 10], start)
            ]
        )
    return bodies


def drain(queue: SqliteQueue) -> list[ReceivedMessage]:
    received = []
    while batch := queue.receive(10, 0):
        received.extend(batch)
        queue.delete([m.receipt_handle for m in batch])
    return received


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(tmp_path: Path, clock: FakeClock) -> SqliteQueue:
    return SqliteQueue(tmp_path / "env.db", max_receive_count=3, clock=clock)


# ---------------------------------------------------------------- several workers


def _drain_in_process(path: str, start: object, out: str) -> None:
    """A worker process: receive and delete until the queue is empty, write what it got."""
    queue = SqliteQueue(Path(path))
    queue.depth()  # connected before the race starts
    start.wait(60)  # type: ignore[attr-defined]  # a Barrier: both begin at once
    got: list[str] = []
    while True:
        batch = queue.receive(10, 0.2)
        if not batch:
            if queue.depth().empty:
                break
            continue
        got.extend(m.body for m in batch)
        # Handling takes time in a real worker; without it one process can hold SQLite's
        # write lock almost all the time and the other never gets a turn.
        time.sleep(0.002)
        queue.delete([m.receipt_handle for m in batch])
    Path(out).write_text(json.dumps(got))


def test_two_processes_draining_one_file_receive_every_message_exactly_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "env.db"
    sender = SqliteQueue(path)
    bodies = fill(sender, 3000, groups=300)
    sender.close()

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    outputs = [tmp_path / f"worker-{n}.json" for n in range(2)]
    workers = [
        context.Process(target=_drain_in_process, args=(str(path), start, str(out)))
        for out in outputs
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0

    received = [json.loads(out.read_text()) for out in outputs]
    everything = received[0] + received[1]
    assert len(everything) == len(bodies)  # nothing twice
    assert set(everything) == set(bodies)  # nothing lost
    assert all(received), "both processes took part"


def _send_one(queue: SqliteQueue, body: str) -> None:
    queue.send_batch([message(body, group=body)])


def test_a_forked_child_uses_its_own_connection_and_message_ids(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "env.db")
    queue.send_batch([message("parent", group="P")])  # the parent holds a connection
    child = multiprocessing.get_context("fork").Process(target=_send_one, args=(queue, "child"))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    queue.send_batch([message("parent again", group="Q")])
    received = drain(queue)
    assert sorted(m.body for m in received) == ["child", "parent", "parent again"]
    assert len({m.message_id for m in received}) == 3


def test_many_threads_on_one_queue_never_share_a_message(queue: SqliteQueue) -> None:
    bodies = fill(queue, 1000, groups=1000)
    got: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        while batch := queue.receive(10, 0):
            with lock:
                got.extend(m.body for m in batch)
            queue.delete([m.receipt_handle for m in batch])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == sorted(bodies)


# ---------------------------------------------------------------- deduplication window


def test_deduplication_outlives_deletion_for_the_window(
    queue: SqliteQueue, clock: FakeClock
) -> None:
    queue.send_batch([message("first", dedup="key-1")])
    [got] = queue.receive(1, 0)
    queue.delete([got.receipt_handle])

    clock.advance(299)
    again = queue.send_batch([message("resend", dedup="key-1")])
    assert again.duplicates == [0] and again.sent == []
    assert queue.receive(10, 0) == []

    clock.advance(2)  # 301 s after the first send
    late = queue.send_batch([message("after the window", dedup="key-1")])
    assert late.sent == [0]
    assert [m.body for m in queue.receive(10, 0)] == ["after the window"]


def test_a_duplicate_does_not_extend_the_window(queue: SqliteQueue, clock: FakeClock) -> None:
    queue.send_batch([message("a", dedup="k")])
    clock.advance(200)
    assert queue.send_batch([message("b", dedup="k")]).duplicates == [0]
    clock.advance(101)  # 301 s after the first send, 101 s after the duplicate
    assert queue.send_batch([message("c", dedup="k")]).sent == [0]


def test_the_dedup_window_is_configurable(tmp_path: Path, clock: FakeClock) -> None:
    queue = SqliteQueue(tmp_path / "q.db", dedup_window_s=10, clock=clock)
    queue.send_batch([message("a", dedup="k")])
    clock.advance(11)
    assert queue.send_batch([message("b", dedup="k")]).sent == [0]


def test_queues_on_one_file_share_the_window_before_and_after_a_merge(
    tmp_path: Path, clock: FakeClock
) -> None:
    # Two instances stand for two processes: each keeps its own copy of the recent ids.
    first = SqliteQueue(tmp_path / "q.db", dedup_merge_rows=3, clock=clock)
    second = SqliteQueue(tmp_path / "q.db", dedup_merge_rows=3, clock=clock)
    check = sqlite3.connect(tmp_path / "q.db")

    def recent() -> int:
        return int(check.execute("SELECT COUNT(*) FROM queue_dedup_recent").fetchone()[0])

    # Each instance's first send also sweeps (and merges); from then on ids stay recent.
    assert first.send_batch([message("warm up")]).sent == [0]
    assert second.send_batch([message("warm up again", dedup="d-warm up")]).duplicates == [0]
    assert first.send_batch([message("a")]).sent == [0]
    assert recent() == 1
    assert second.send_batch([message("a again", dedup="d-a")]).duplicates == [0]
    assert second.send_batch([message("b"), message("c")]).sent == [0, 1]
    assert recent() == 0  # three recent ids: merged
    # `first` learns of the merge and finds them in the merged table.
    again = first.send_batch([message(f"{b} again", dedup=f"d-{b}") for b in "abc"])
    assert again.duplicates == [0, 1, 2]
    assert sorted(m.body for m in drain(first)) == ["a", "b", "c", "warm up"]
    check.close()


def test_merged_ids_expire_with_the_window(tmp_path: Path, clock: FakeClock) -> None:
    queue = SqliteQueue(tmp_path / "q.db", dedup_window_s=10, dedup_merge_rows=1, clock=clock)
    queue.send_batch([message("a")])
    clock.advance(9)
    assert queue.send_batch([message("a again", dedup="d-a")]).duplicates == [0]
    clock.advance(2)
    assert queue.send_batch([message("a later", dedup="d-a")]).sent == [0]
    # The sweep (due by now) dropped the expired digest before the new one was merged.
    check = sqlite3.connect(tmp_path / "q.db")
    assert check.execute("SELECT COUNT(*) FROM queue_dedup_ids").fetchone() == (1,)


def test_ids_sharing_the_first_half_of_their_digest_are_both_sent(
    queue: SqliteQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raasctl.queues.sqlite as module

    real = module.dedup_digest
    monkeypatch.setattr(module, "dedup_digest", lambda dedup_id: (7, real(dedup_id)[1]))
    assert queue.send_batch([message("a"), message("b")]).sent == [0, 1]
    assert queue.send_batch([message("a again", dedup="d-a")]).duplicates == [0]
    assert sorted(m.body for m in drain(queue)) == ["a", "b"]


def test_a_send_rolled_back_leaves_its_ids_unrecorded(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.db")
    queue.send_batch([message("warm up")])
    fail = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    # The write fails after the ids were noted, as a full disk would at COMMIT.
    fail.execute(
        "CREATE TRIGGER fail BEFORE INSERT ON queue_dedup_recent"
        " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(QueueError, match="disk full"):
        queue.send_batch([message("a")])
    fail.execute("DROP TRIGGER fail")
    fail.close()
    assert queue.send_batch([message("a")]).sent == [0]  # not taken for a duplicate
    assert sorted(m.body for m in drain(queue)) == ["a", "warm up"]


# ---------------------------------------------------------------- long polling


def test_an_empty_long_poll_waits_without_spinning_a_core(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.db")
    queue.send_batch([message("warm up")])
    drain(queue)
    started, cpu_started = time.monotonic(), time.thread_time()
    assert queue.receive(10, 1.0) == []
    elapsed, cpu = time.monotonic() - started, time.thread_time() - cpu_started
    assert 1.0 <= elapsed < 1.5
    assert cpu < 0.25, f"the long poll used {cpu:.2f} s of CPU in {elapsed:.2f} s"


def test_a_long_poll_returns_soon_after_a_message_arrives(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.db")
    queue.depth()  # schema in place before the timing starts
    sent_at: list[float] = []

    def send_later() -> None:
        time.sleep(0.3)
        sent_at.append(time.monotonic())
        SqliteQueue(tmp_path / "q.db").send_batch([message("late")])

    sender = threading.Thread(target=send_later)
    sender.start()
    got = queue.receive(10, 5.0)
    returned_at = time.monotonic()
    sender.join()
    assert [m.body for m in got] == ["late"]
    assert returned_at - sent_at[0] < 0.25


def test_a_long_poll_wakes_when_a_message_becomes_visible_again(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.db")
    queue.send_batch([message("a")])
    [first] = queue.receive(1, 0, visibility_timeout_s=1)
    started = time.monotonic()
    [again] = queue.receive(1, 3.0)
    assert again.message_id == first.message_id
    assert time.monotonic() - started < 1.3


def test_idle_polls_do_not_need_the_write_lock(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.db", busy_timeout_s=0.5)
    queue.depth()
    blocker = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process writing, e.g. the state adapter
    try:
        started = time.monotonic()
        assert queue.receive(10, 0) == []
        assert queue.depth().empty
        assert time.monotonic() - started < 0.4
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_a_database_locked_too_long_is_a_queue_error(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.db", busy_timeout_s=0.2)
    queue.depth()
    blocker = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(QueueError) as caught:
            queue.send_batch([message("a")])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert caught.value.code == ErrorCode.QUEUE_FAILED
    assert "locked" in str(caught.value) and "q.db" in str(caught.value)


# ---------------------------------------------------------------- FIFO heads and the DLQ


def test_an_exhausted_head_makes_way_for_the_next_message_of_its_group(
    queue: SqliteQueue,
) -> None:
    queue.send_batch([message("a1", "A"), message("a2", "A")])
    for _ in range(3):
        [got] = queue.receive(1, 0)
        assert got.body == "a1"
        queue.change_visibility(got.receipt_handle, 0)
    [next_one] = queue.receive(10, 0)  # a1 goes to the DLQ within this receive
    assert next_one.body == "a2"
    [dead] = queue.peek(10, dlq=True)
    assert dead.body == "a1"
    assert dead.receive_count == 3
    assert dead.attributes["reason"] == "received 3 times (max_receive_count)"


def test_redrive_puts_a_group_behind_its_waiting_messages(queue: SqliteQueue) -> None:
    queue.send_batch([message("a1", "A"), message("a2", "A"), message("b1", "B")])
    for got in queue.receive(10, 0):
        if got.body == "a1":
            queue.dead_letter(got, "permanent")
        else:
            queue.change_visibility(got.receipt_handle, 0)
    assert queue.redrive().moved == 1
    received = drain(queue)
    assert [m.body for m in received if m.group_id == "A"] == ["a2", "a1"]
    assert [m.body for m in received if m.group_id == "B"] == ["b1"]


def test_dead_letter_of_a_message_already_deleted_is_a_no_op(queue: SqliteQueue) -> None:
    queue.send_batch([message("a")])
    [got] = queue.receive(1, 0)
    queue.delete([got.receipt_handle])
    queue.dead_letter(got, "late")
    assert queue.depth().dlq_visible == 0


def test_an_old_receipt_handle_neither_deletes_nor_changes_the_message(
    queue: SqliteQueue, clock: FakeClock
) -> None:
    queue.send_batch([message("a")])
    [first] = queue.receive(1, 0, visibility_timeout_s=10)
    clock.advance(11)
    [second] = queue.receive(1, 0, visibility_timeout_s=10)
    queue.delete([first.receipt_handle, "garbage", "12:"])
    queue.change_visibility(first.receipt_handle, 0)
    depth = queue.depth()
    assert (depth.visible, depth.in_flight) == (0, 1)  # held by the second receive
    queue.delete([second.receipt_handle])
    assert queue.depth().empty


def test_purge_and_peek_report_and_do_not_receive(queue: SqliteQueue) -> None:
    fill(queue, 25, groups=25)
    peeked = queue.peek(5)
    assert [m.body for m in peeked] == ["m0", "m1", "m2", "m3", "m4"]
    assert all(m.receive_count == 0 for m in peeked)
    assert queue.purge() == 25
    assert queue.purge(dlq=True) == 0


# ---------------------------------------------------------------- the shared file


def test_the_queue_shares_its_file_with_other_tables(tmp_path: Path) -> None:
    path = tmp_path / "env.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE state_runs (run_id TEXT PRIMARY KEY)")
    other.execute("INSERT INTO state_runs VALUES ('run-1')")
    other.commit()
    other.close()

    queue = SqliteQueue(path)
    queue.send_batch([message("a")])
    drain(queue)
    queue.close()

    check = sqlite3.connect(path)
    tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert check.execute("SELECT run_id FROM state_runs").fetchall() == [("run-1",)]
    assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    check.close()
    assert {t for t in tables if t != "state_runs"} == {
        "queue_messages",
        "queue_dedup_ids",
        "queue_dedup_recent",
        "queue_dedup_merged",
        "dlq_messages",
    }


def test_close_then_use_again_reopens(queue: SqliteQueue) -> None:
    queue.send_batch([message("a")])
    queue.close()
    assert [m.body for m in drain(queue)] == ["a"]


def test_a_whole_receive_is_deleted_within_an_older_sqlite_s_parameter_limit(
    tmp_path: Path,
) -> None:
    # SQLite before 3.32 binds at most 999 parameters a statement; a delete binds three a
    # handle, so a receive of 500 is deleted in chunks.
    queue = SqliteQueue(tmp_path / "q.db", fifo=False)
    queue.send_batch([message(f"m{n}", group="") for n in range(queue.max_receive + 20)])
    received = queue.receive(queue.max_receive, 0)
    assert len(received) == queue.max_receive
    queue._db.connection().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    queue.delete([m.receipt_handle for m in received])

    assert queue.depth().visible == 20
    left = drain(queue)
    assert {m.body for m in left} == {
        f"m{n}" for n in range(queue.max_receive, queue.max_receive + 20)
    }
    queue.close()


class SmallReceives(SqliteQueue):
    max_receive_bytes = 250_000


def test_a_receive_brings_bodies_up_to_its_size_bound_and_always_one(tmp_path: Path) -> None:
    # A worker holds a receive for each slot and one more: large bodies must not make that
    # hundreds of megabytes.
    queue = SmallReceives(tmp_path / "q.db", fifo=False)
    bodies = ["a" * 100_000, "b" * 100_000, "c" * 100_000, "d" * 400_000, "e" * 10]
    queue.send_batch([message(body, group="") for body in bodies])

    sizes = []
    while batch := queue.receive(queue.max_receive, 0):
        sizes.append([len(m.body) for m in batch])
        queue.delete([m.receipt_handle for m in batch])

    assert sizes == [[100_000, 100_000], [100_000], [400_000], [10]]
    queue.close()


def test_messages_bound_for_the_dlq_do_not_count_toward_a_receive_s_size(
    tmp_path: Path, clock: FakeClock
) -> None:
    queue = SmallReceives(tmp_path / "q.db", fifo=False, max_receive_count=1, clock=clock)
    queue.send_batch([message("a" * 200_000, group="")])
    assert len(queue.receive(10, 0)) == 1  # its one allowed receive, not deleted
    queue.send_batch([message(body, group="") for body in ("b" * 200_000, "c" * 10)])
    clock.advance(61)  # the first one is visible again, received once already

    got = queue.receive(queue.max_receive, 0)

    # b and c fit in the bound; a, on its way to the DLQ, took none of it.
    assert [len(m.body) for m in got] == [200_000, 10]
    assert [len(m.body) for m in queue.peek(10, dlq=True)] == [200_000]  # a, to the DLQ
    queue.close()
