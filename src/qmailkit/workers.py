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
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

__all__ = [
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
        import ctypes

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
    """A running worker started by ``start``; collect it with ``result`` or stop it with ``kill``."""

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
        import fcntl

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
