"""Forked worker processes that die with their parent.

Used where a command splits independent work over the CPUs (convert-multilog's
services, mkvalidrcptto's domains).  A worker is a plain ``os.fork`` child: it
shares the parent's already-loaded state for free, sends its answer back
through a pipe and leaves with ``os._exit`` (never returning into the
parent's code, never flushing the parent's buffered output a second time).

* ``die_with_parent(parent)``: in the child, first thing: the kernel kills it
  when the parent dies (PR_SET_PDEATHSIG), so a killed run leaves no process
  behind (holding a lock, writing files).
* ``write_all(fd, data)``: ``os.write`` until everything is written.
* ``spawn(target)``: fork a worker that runs ``target(wfd)`` and writes what
  it has to say to the pipe ``wfd`` (convert-multilog streams messages).
* ``start(func)``: fork a worker that runs ``func()`` and sends the bytes it
  returns; ``None`` when no pipe or process can be had (the caller then does
  the work itself).  ``Worker.result()`` collects the bytes, ``Worker.kill()``
  stops it.
* ``map_ordered(func, items, jobs=...)``: the one pool.  It gives what
  ``[func(item, send) for item in items]`` gives (results in input order, the
  exception of the first failing item in input order), with the items spread
  over forked workers in chunks, and each ``send(message)`` delivered to the
  parent's ``on_message`` as it happens (progress, log lines).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pickle
import selectors
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Generic, TypeVar

from qmailkit.errors import QmailkitError

__all__ = [
    "map_ordered",
    "Worker",
    "WorkerFailed",
    "die_with_parent",
    "spawn",
    "start",
    "write_all",
]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this (forked) process when ``parent`` dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the prctl took effect
        os._exit(111)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class WorkerFailed(Exception):
    """The worker died without sending its whole answer (a bug, or killed)."""


class Worker:
    """A worker started by ``start``: collect it with ``result``, stop it with ``kill``."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    def result(self) -> bytes:
        """Everything the worker sent, once it has exited 0; WorkerFailed otherwise."""
        chunks = []
        try:
            while chunk := os.read(self.fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(self.fd)
            self.fd = -1
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        if status != 0:
            raise WorkerFailed(f"worker process died (wait status {status})")
        return b"".join(chunks)

    def kill(self) -> None:
        """Stop the worker (if still there) and reap it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0


def spawn(target: Callable[[int], None]) -> tuple[int, int] | None:
    """Fork a worker that runs ``target(wfd)``, writing its answer to the pipe ``wfd``.

    Returns (pid, read end of the pipe), or None when the pipe or the fork
    cannot be had.  The worker dies with its parent and leaves with
    ``os._exit``: 0 when ``target`` returns, 111 when anything escapes it.
    """
    try:
        rfd, wfd = os.pipe()
    except OSError:
        return None
    with contextlib.suppress(OSError, AttributeError):
        # A bigger pipe: a big answer then crosses in far fewer rounds.
        fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, 1 << 20)
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(rfd)
        os.close(wfd)
        return None
    if pid == 0:  # the worker
        code = 0
        try:
            os.close(rfd)
            die_with_parent(parent)
            target(wfd)
        except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
            code = 111
        finally:
            os._exit(code)
    os.close(wfd)
    return pid, rfd


def start(func: Callable[[], bytes]) -> Worker | None:
    """Fork a worker that runs ``func()`` and sends back the bytes it returns.

    ``func`` should turn its own errors into its answer; an exception escaping
    it makes the worker exit 111 (``result`` then raises WorkerFailed).
    Returns None when the pipe or the fork cannot be had.
    """
    spawned = spawn(lambda wfd: write_all(wfd, func()))
    return None if spawned is None else Worker(*spawned)


# -- the ordered map -----------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")
Send = Callable[[object], None]

# Frames on a worker's pipe: 4-byte big-endian length, then a pickled
# (kind, index, payload) with kind "message", "result" or "error".
_FLUSH_AT = 1 << 18  # results are batched up to this many bytes; messages go at once
_READ_SIZE = 1 << 20  # the pipe's size (spawn): a big result crosses in few reads


def _ignore(_message: object) -> None:
    pass


@dataclass
class _Running:
    pid: int
    indexes: range
    buffer: bytearray = field(default_factory=bytearray)


def map_ordered(
    func: Callable[[T, Send], R],
    items: Sequence[T],
    *,
    jobs: int,
    chunk: int = 1,
    here: bool = False,
    on_message: Send | None = None,
) -> list[R]:
    """``[func(item, send) for item in items]``, spread over up to ``jobs`` processes.

    Items go to forked workers ``chunk`` at a time (at most ``jobs`` running;
    with ``here`` the first chunk is done in this process while the workers
    run, and counts as one of the ``jobs``).  Results come back in input order;
    if items fail, the exception of the first failing one in input order is
    raised (after every worker has been collected), as the loop would have.
    A worker that dies is a WorkerFailed for its first unfinished item.  When
    no process can be had the chunk is done here.  Messages a worker sends
    reach ``on_message`` as they arrive, so they are not in input order
    across workers.  Results, messages and exceptions must pickle (``func``
    need not: workers are forks).
    """
    deliver = on_message or _ignore
    if jobs <= 1 or len(items) <= 1:
        return [func(item, deliver) for item in items]
    return _Pool(func, items, deliver).run(jobs, max(1, chunk), here)


class _Pool(Generic[T, R]):
    def __init__(self, func: Callable[[T, Send], R], items: Sequence[T], deliver: Send) -> None:
        self.func = func
        self.items = items
        self.deliver = deliver
        self.results: dict[int, R] = {}
        self.errors: dict[int, BaseException] = {}
        self.running: dict[int, _Running] = {}  # read end of the pipe -> worker
        self.waiting: list[range] = []

    def run(self, jobs: int, chunk: int, here: bool) -> list[R]:
        n = len(self.items)
        self.waiting = [range(i, min(i + chunk, n)) for i in range(0, n, chunk)]
        own = self.waiting.pop(0) if here else None
        slots = jobs - 1 if here else jobs
        selector = selectors.DefaultSelector()
        try:
            self._start_more(selector, slots)
            if own is not None:
                self._run_here(own)
            while self.running:
                for key, _ in selector.select():
                    if self._read_frames(key.fd):
                        continue
                    selector.unregister(key.fd)
                    self._collect(key.fd)
                    self._start_more(selector, slots)
        finally:
            selector.close()
            for fd, worker in self.running.items():
                Worker(worker.pid, fd).kill()
        if self.errors:
            raise self.errors[min(self.errors)]
        return [self.results[i] for i in range(n)]

    def _run_here(self, indexes: range) -> None:
        for i in indexes:
            try:
                self.results[i] = self.func(self.items[i], self.deliver)
            except Exception as err:  # noqa: BLE001 - raised in input order at the end
                self.errors[i] = err
                return

    def _start_more(self, selector: selectors.BaseSelector, slots: int) -> None:
        """Fork workers for waiting chunks until ``slots`` run (none past a known failure)."""
        while self.waiting and len(self.running) < slots:
            indexes = self.waiting.pop(0)
            if self.errors and indexes.start > min(self.errors):
                self.waiting.clear()  # the loop would never have got this far
                return
            spawned = spawn(partial(self._work, indexes))
            if spawned is None:  # out of processes or descriptors: do it here
                self._run_here(indexes)
                continue
            pid, rfd = spawned
            self.running[rfd] = _Running(pid, indexes)
            selector.register(rfd, selectors.EVENT_READ)

    def _work(self, indexes: range, wfd: int) -> None:
        """In a worker: ``func`` over ``indexes``, results batched, messages sent at once."""
        pending = bytearray()
        current = indexes.start

        def frame(kind: str, payload: object) -> None:
            blob = pickle.dumps((kind, current, payload), protocol=pickle.HIGHEST_PROTOCOL)
            pending.extend(len(blob).to_bytes(4, "big"))
            if len(blob) < _FLUSH_AT:
                pending.extend(blob)
                return
            # A big result goes to the pipe as it is: two copies of megabytes cost more
            # than a write.
            write_all(wfd, bytes(pending))
            pending.clear()
            write_all(wfd, blob)

        def send(message: object) -> None:
            frame("message", message)
            write_all(wfd, bytes(pending))
            pending.clear()

        for current in indexes:  # noqa: B007 - frame() reads it
            try:
                frame("result", self.func(self.items[current], send))
            except Exception as err:  # noqa: BLE001 - travels to the parent, raised there
                frame("error", _portable(err))
                break
            if len(pending) >= _FLUSH_AT:
                write_all(wfd, bytes(pending))
                pending.clear()
        write_all(wfd, bytes(pending))

    def _read_frames(self, fd: int) -> bool:
        """Read what ``fd`` has and act on its whole frames; False at end of file."""
        data = os.read(fd, _READ_SIZE)
        if not data:
            return False
        buf = self.running[fd].buffer
        buf += data
        start = 0
        while len(buf) - start >= 4:
            size = int.from_bytes(buf[start : start + 4], "big")
            if len(buf) - start - 4 < size:
                break
            with memoryview(buf) as view, view[start + 4 : start + 4 + size] as blob:
                kind, index, payload = pickle.loads(blob)  # no copy of a big result
            start += 4 + size
            if kind == "message":
                self.deliver(payload)
            elif kind == "result":
                self.results[index] = payload
            else:
                self.errors[index] = payload
        del buf[:start]
        return True

    def _collect(self, fd: int) -> None:
        """Reap a worker whose pipe closed; a death leaves WorkerFailed at its first gap."""
        worker = self.running.pop(fd)
        os.close(fd)
        _, status = os.waitpid(worker.pid, 0)
        for i in worker.indexes:
            if i in self.errors:
                return
            if i not in self.results:
                self.errors[i] = WorkerFailed(f"worker process died (wait status {status})")
                return


def _portable(err: Exception) -> Exception:
    """``err`` if it survives pickling, else a QmailkitError that says what it was."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # noqa: BLE001 - any failure means it cannot travel
        return QmailkitError(f"{type(err).__name__}: {err}")
    return err
