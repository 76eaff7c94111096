"""The ``qmailkit`` command: argparse dispatch to one module per command group.

Start-up imports only the standard library's argparse and these small modules;
each command imports the library modules it needs when it runs.  Every command
module has ``register(subparsers)``, which adds its sub-commands and sets
``func`` (called with the parsed namespace, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import BinaryIO, NoReturn

# The command groups, in the order ``qmailkit --help`` lists them.
COMMAND_MODULES = (
    "logs",  # tai64nlocal, tai64n, convert-multilog
    "cdb",  # cdb make/dump/get/stats
    "tcprules",  # tcprules, tcprules check
    "qmailcdb",  # newu, newmrh
    "rcpt",  # rcpt build/check (mkvalidrcptto)
    "auth",  # auth build/check (mkauth)
    "services",  # services render/apply/status/check
    "demo",  # demo
)


class Parser(argparse.ArgumentParser):
    """argparse with djb's convention: a usage error exits 100 (permanent), not 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(100, f"{self.prog}: usage: {message}\n")


def stdin_binary() -> BinaryIO:
    """Standard input as bytes; a message, not a traceback, when it is closed (``<&-``)."""
    if sys.stdin is None:
        from qmailkit.errors import QmailkitError

        raise QmailkitError("standard input is closed", hint="give the input on it")
    return sys.stdin.buffer


def build_parser() -> argparse.ArgumentParser:
    from qmailkit import __version__

    parser = Parser(
        prog="qmailkit",
        description="Tools for running a qmail mail server under daemontools, runit or s6.",
    )
    parser.add_argument("--version", action="version", version=f"qmailkit {__version__}")
    # A command that builds millions of objects sets it True (see exit_now).
    parser.set_defaults(fast_exit=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"qmailkit.cli.{name}").register(sub)
    return parser


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    """Call a command, turning library errors into a message and an exit code."""
    from qmailkit.errors import QmailkitError

    try:
        return func(args)
    except QmailkitError as err:
        print(f"{prog}: fatal: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (| head); not an error worth a traceback.
        sys.stderr.close()
        return 0


def exit_now(code: int) -> NoReturn:
    """Flush our output and leave without the interpreter's teardown.

    For the commands that build millions of objects (``fast_exit``): freeing
    them one by one at exit costs tens of milliseconds and helps nobody.  Only
    from a real command line; every file is closed and renamed by then.
    """
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream: leave anyway
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code = run(args.func, args, f"qmailkit {args.command}")
    if argv is None and args.fast_exit:
        exit_now(code)
    return code
