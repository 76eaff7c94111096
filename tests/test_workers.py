"""qmailkit.workers: forked workers send bytes back, fail visibly and die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import wait_for

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
