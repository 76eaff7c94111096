"""qmailkit.workers: forked workers send bytes back, fail visibly and die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from support import wait_for

from qmailkit import workers


def test_a_worker_sends_back_what_its_function_returns():
    parent = os.getpid()
    worker = workers.start(lambda: b"from %d, child of %d" % (os.getpid(), os.getppid()))
    assert worker is not None
    pid = worker.pid
    assert worker.result() == b"from %d, child of %d" % (pid, parent)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped


def test_a_big_answer_arrives_whole():
    data = bytes(range(256)) * 40_000  # far more than a pipe holds
    worker = workers.start(lambda: data)
    assert worker is not None
    assert worker.result() == data


def test_an_exception_in_the_worker_is_reported_not_returned_into_our_code():
    def boom() -> bytes:
        raise RuntimeError("boom")

    worker = workers.start(boom)
    assert worker is not None
    with pytest.raises(workers.WorkerFailed, match=r"wait status 28416"):  # exit 111
        worker.result()


def test_kill_stops_a_blocked_worker_and_reaps_it():
    rfd, wfd = os.pipe()
    try:
        worker = workers.start(lambda: os.read(rfd, 1))  # blocks: nobody writes
        assert worker is not None
        pid = worker.pid
        worker.kill()
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        worker.kill()  # a second time is harmless
    finally:
        os.close(rfd)
        os.close(wfd)


def test_no_fork_means_no_worker(monkeypatch):
    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert workers.start(lambda: b"never") is None


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_worker_dies_with_its_parent():
    script = textwrap.dedent("""
        import os, sys
        from qmailkit import workers
        rfd, wfd = os.pipe()
        worker = workers.start(lambda: os.read(rfd, 1))  # blocks for ever
        print(worker.pid, flush=True)
        os.read(rfd, 1)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        pid = int(parent.stdout.readline())
        assert _state(pid) in ("S", "R")
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
    # Killed by the kernel (PR_SET_PDEATHSIG): gone, or a zombie until init reaps it.
    wait_for(lambda: _state(pid) in ("gone", "Z"), timeout=10, what=f"worker {pid} to die")


# -- map_ordered ---------------------------------------------------------------


def _square_and_say(n: int, send) -> tuple[int, int]:
    send(("doing", n))
    return n * n, os.getpid()


@pytest.mark.parametrize(("jobs", "chunk", "here"), [(1, 1, False), (3, 1, False), (2, 4, True)])
def test_map_ordered_gives_what_the_loop_gives_with_every_message(jobs, chunk, here):
    messages: list[object] = []
    got = workers.map_ordered(
        _square_and_say, range(10), jobs=jobs, chunk=chunk, here=here, on_message=messages.append
    )
    assert [value for value, _pid in got] == [n * n for n in range(10)]
    assert sorted(messages) == [("doing", n) for n in range(10)]  # type: ignore[type-var]
    pids = {pid for _value, pid in got}
    if jobs == 1:
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids or here
        assert len(pids) > 1


def test_map_ordered_does_the_first_chunk_here_when_asked():
    got = workers.map_ordered(_square_and_say, range(6), jobs=2, chunk=3, here=True)
    assert [pid == os.getpid() for _value, pid in got] == [True] * 3 + [False] * 3


def _fail_on(bad: set[int]):
    def func(n: int, send) -> int:
        if n in bad:
            raise ValueError(f"item {n}")
        return n

    return func


def test_map_ordered_raises_the_first_failure_in_input_order():
    # Item 7 fails in a worker that finishes first; item 2 fails later in another.
    with pytest.raises(ValueError, match=r"^item 2$"):
        workers.map_ordered(_fail_on({2, 7}), range(9), jobs=3, chunk=3)
    with pytest.raises(ValueError, match=r"^item 2$"):
        workers.map_ordered(_fail_on({2, 7}), range(9), jobs=1)


def test_map_ordered_turns_an_exception_that_cannot_pickle_into_a_named_error():
    class Local(Exception):  # a local class cannot be pickled
        pass

    def func(n: int, send) -> int:
        if n == 1:
            raise Local("not portable")
        return n

    from qmailkit.errors import QmailkitError

    with pytest.raises(QmailkitError, match=r"^Local: not portable$"):
        workers.map_ordered(func, range(4), jobs=2)


def test_map_ordered_reports_a_dead_worker_at_its_first_unfinished_item():
    def func(n: int, send) -> int:
        if n == 4:
            os._exit(3)
        return n

    with pytest.raises(workers.WorkerFailed, match=r"wait status 768"):
        workers.map_ordered(func, range(6), jobs=2, chunk=3)


def test_map_ordered_does_the_work_here_when_no_process_can_be_had(monkeypatch):
    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    got = workers.map_ordered(_square_and_say, range(5), jobs=4)
    assert got == [(n * n, os.getpid()) for n in range(5)]


def test_map_ordered_carries_big_results_whole():
    data = workers.map_ordered(lambda n, send: bytes([n]) * 300_000, range(5), jobs=2)
    assert data == [bytes([n]) * 300_000 for n in range(5)]


def _big_or_small(n: int, send) -> bytes:
    send(n)
    return bytes([n]) * (3_000_000 if n % 2 else 10)


def test_map_ordered_keeps_frames_whole_when_big_results_skip_the_batch():
    # A result of megabytes goes to the pipe on its own, between small ones and messages.
    messages: list[int] = []
    got = workers.map_ordered(_big_or_small, range(8), jobs=2, chunk=4, on_message=messages.append)
    assert got == [bytes([n]) * (3_000_000 if n % 2 else 10) for n in range(8)]
    assert sorted(messages) == list(range(8))
