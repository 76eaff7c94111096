"""``qmailkit newu`` and ``qmailkit newmrh``: qmail's own cdb builders.

Like qmail-newu and qmail-newmrh they exit 111 on every failure, bad input
included (the docs pages say so); nothing is replaced unless the whole input
is good.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from qmailkit.cli.options import add_shrink_guard

# Importing typing at start-up costs time every command pays; only checkers need T.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

DEFAULT_QMAIL_HOME = "/var/qmail"
# qmail-newu and qmail-newmrh use one exit code for every failure.
EXIT_FAILURE = 111


def register(sub: argparse._SubParsersAction) -> None:
    newu = sub.add_parser(
        "newu",
        help="compile users/assign into users/cdb (qmail-newu)",
        description="Compile QMAIL/users/assign into QMAIL/users/cdb, as qmail-newu does, "
        "after checking every line. users/cdb is replaced atomically, and only if the "
        "whole file is good.",
    )
    newu.add_argument(
        "--qmail-home",
        metavar="DIR",
        default=DEFAULT_QMAIL_HOME,
        help="qmail's home directory (default %(default)s)",
    )
    newu.add_argument(
        "-v", "--verbose", action="store_true", help="say how many entries were written"
    )
    add_shrink_guard(newu, "entries")
    newu.set_defaults(func=_newu)

    newmrh = sub.add_parser(
        "newmrh",
        help="compile control/morercpthosts into morercpthosts.cdb (qmail-newmrh)",
        description="Compile QMAIL/control/morercpthosts into QMAIL/control/morercpthosts.cdb, "
        "as qmail-newmrh does: names lower-cased, empty values, comments and blank lines "
        "ignored. The cdb is replaced atomically.",
    )
    newmrh.add_argument(
        "--qmail-home",
        metavar="DIR",
        default=DEFAULT_QMAIL_HOME,
        help="qmail's home directory (default %(default)s)",
    )
    newmrh.add_argument(
        "-v", "--verbose", action="store_true", help="say how many domains were written"
    )
    add_shrink_guard(newmrh, "domains")
    newmrh.set_defaults(func=_newmrh)


def _as_failure(func: Callable[[], T]) -> T:
    """Run func; any QmailkitError leaves with qmail-newu's single failure code."""
    from qmailkit.errors import QmailkitError

    try:
        return func()
    except QmailkitError as err:
        err.exit_code = EXIT_FAILURE
        raise


def _newu(args: argparse.Namespace) -> int:
    from qmailkit.qmail import assign

    entries = _as_failure(
        lambda: assign.compile_users_cdb(
            args.qmail_home, force=args.force, max_shrink=args.max_shrink
        )
    )
    if args.verbose:
        path = os.path.join(args.qmail_home, "users", "cdb")
        print(f"{path}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    return 0


def _newmrh(args: argparse.Namespace) -> int:
    from qmailkit.qmail import control

    count = _as_failure(
        lambda: control.compile_morercpthosts(
            args.qmail_home, force=args.force, max_shrink=args.max_shrink
        )
    )
    if args.verbose:
        target = os.path.join(args.qmail_home, "control", "morercpthosts.cdb")
        print(f"{target}: {count} domain{'' if count == 1 else 's'}")
    return 0
