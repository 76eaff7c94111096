"""Command-line interface: ``qmailkit rcpt build|check`` and the ``mkvalidrcptto`` alias."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from qmailkit.cli.options import add_shrink_guard, processes, user_number

if TYPE_CHECKING:
    from qmailkit.qmail.recipients import Options

_BUILD_DESCRIPTION = (
    "Read the qmail configuration (rcpthosts, morercpthosts.cdb, locals, virtualdomains, "
    "smtproutes, users/cdb, system accounts and their .qmail files, the alias user and "
    "fastforward, vpopmail domains, ezmlm lists) and list every valid recipient key for "
    "qmail-smtpd's validrcptto.cdb: local@domain, prefix-default@domain or @domain, lower-cased, "
    "once each. Addresses that always bounce (|bouncesaying, |exit 100) get the value '-', "
    "which the patch treats as an explicit reject. Without -c or -m, prints one key per line "
    "(followed by ' -' for a rejecting key: cdbmake-12 input). Refuses to produce anything when "
    "a domain in rcpthosts is not handled, or is in both locals and virtualdomains (or "
    "smtproutes). Exit 0 done, 100 configuration or input to fix (nothing written), "
    "111 system trouble or another run holding the lock."
)


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        dest="cdb",
        metavar="FILE",
        help="write the cdb FILE, only if its keys or values change (the file and "
        "its mtime are left alone otherwise)",
    )
    p.add_argument(
        "-m",
        dest="cdbmake",
        action="store_true",
        help="print cdbmake format (+KLEN,VLEN:KEY->VALUE lines, then a blank line)",
    )
    p.add_argument(
        "-d",
        dest="debug",
        action="store_true",
        help="debug: on stderr, each key with the source that produced it, and every warning",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="print KEY<TAB>accept|reject<TAB>SOURCE for each key instead of the list",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no warnings (catch-all domains, skipped users...) on stderr",
    )
    add_shrink_guard(p, "keys")
    _add_model_options(p)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n",
        dest="skip_alias",
        action="store_true",
        help="leave out the alias user (~alias/.qmail-* files and fastforward)",
    )
    p.add_argument(
        "--qmail-home",
        metavar="DIR",
        default="/var/qmail",
        help="qmail's home (default /var/qmail)",
    )
    p.add_argument(
        "--vpopmail-home",
        metavar="DIR",
        help="vpopmail's home (default: ~vpopmail from the passwd file)",
    )
    p.add_argument(
        "--passwd",
        metavar="FILE",
        default="/etc/passwd",
        help="system accounts (default /etc/passwd)",
    )
    p.add_argument(
        "--uid-min",
        type=user_number,
        default=500,
        metavar="N",
        help="lowest uid of a mail account (default 500; uid 0 never)",
    )
    p.add_argument(
        "--uid-max",
        type=user_number,
        default=65000,
        metavar="N",
        help="highest uid of a mail account (default 65000)",
    )
    p.add_argument(
        "--uid-ignore",
        type=user_number,
        action="append",
        default=[],
        metavar="UID",
        help="leave out this uid (repeatable)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="ADDR",
        help="never list this key (repeatable)",
    )
    p.add_argument(
        "--smtproutes-dir",
        metavar="DIR",
        help="directory of per-domain mailbox lists for relayed (smtproutes) domains; "
        "a relayed domain without a list accepts everything (@domain)",
    )
    ext = p.add_mutually_exclusive_group()
    ext.add_argument(
        "--qmail-ext",
        dest="qmail_ext",
        action="store_true",
        default=None,
        help="vpopmail was built with --enable-qmail-ext: add user-default@domain "
        "(default: read vpopmail's include/vpopmail_config.h)",
    )
    ext.add_argument("--no-qmail-ext", dest="qmail_ext", action="store_false")
    p.add_argument(
        "--vpopmail-sql",
        action="store_true",
        default=None,
        help="vpopmail keeps users in SQL: ask vuserinfo -D / valias -s (default: "
        "only for domains without vpasswd or vpasswd.cdb)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=processes,
        metavar="N",
        help="read the configuration with N processes (default: one per CPU; "
        "a configuration with few domains always uses one)",
    )


def _options(args: argparse.Namespace) -> Options:
    from pathlib import Path

    from qmailkit.qmail.recipients import Options

    return Options(
        qmail_home=Path(args.qmail_home),
        vpopmail_home=Path(args.vpopmail_home) if args.vpopmail_home else None,
        passwd=Path(args.passwd),
        uid_min=args.uid_min,
        uid_max=args.uid_max,
        uid_ignore=frozenset(args.uid_ignore),
        skip_alias=args.skip_alias,
        smtproutes_dir=Path(args.smtproutes_dir) if args.smtproutes_dir else None,
        exclude=frozenset(args.exclude),
        qmail_ext=args.qmail_ext,
        vpopmail_sql=args.vpopmail_sql,
        jobs=args.jobs,
    )


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off while the command works.

    A big configuration makes millions of objects and no reference cycles; the
    collector would walk them all again and again (a third of the run time).
    Afterwards they are frozen (left out of later collections) rather than
    walked once more at the next allocation.
    """
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.freeze()
            gc.enable()


def _build(args: argparse.Namespace) -> int:
    from qmailkit import rcpt

    opts = _options(args)
    guard = rcpt.lock(args.cdb) if args.cdb else contextlib.nullcontext()
    with _no_gc(), guard as state_fd:
        rec = rcpt.build(opts)
        if args.debug:
            for line in rcpt.explain_lines(rec):
                sys.stderr.write("debug: " + line)
        for warning in [] if args.quiet else rec.warnings:
            print(f"{args.prog}: warning: {warning}", file=sys.stderr)
        out = sys.stdout.buffer
        if args.cdb:
            result = rcpt.write_cdb(
                args.cdb, rec, force=args.force, max_shrink=args.max_shrink, state_fd=state_fd
            )
            was = "" if result.previous is None else f" (was {result.previous})"
            if result.written:
                print(f"{args.prog}: {result.path}: wrote {result.count} keys{was}")
            else:
                print(
                    f"{args.prog}: {result.path}: unchanged ({result.count} keys), file left alone"
                )
        elif args.explain:
            out.write("".join(rcpt.explain_lines(rec)).encode("utf-8", "surrogateescape"))
        elif args.cdbmake:
            out.write(b"".join(rcpt.cdbmake_text(rec)))
        else:
            out.write(b"".join(rcpt.lines(rec)))
        out.flush()
    return 0


def _check(args: argparse.Namespace) -> int:
    from qmailkit import rcpt

    source = None
    if args.cdb:
        decision = rcpt.check_cdb(args.address, args.cdb)
    else:
        with _no_gc():
            decision, rec = rcpt.check_live(args.address, _options(args))
        if decision.key is not None:
            source = rec.source(decision.key)
        domain = rec.foreign_domain(args.address)
        if domain is not None:
            print(
                f"reject: {args.address}: {domain} is not in rcpthosts or morercpthosts.cdb "
                "(qmail-smtpd answers 553 unless the client may relay)"
            )
            return 1
    shown = " ".join(k.decode("utf-8", "surrogateescape") for k in decision.tried)
    verdict = "accept" if decision.accept else "reject"
    where = f" (from {source})" if source else ""
    print(f"{verdict}: {args.address}: {decision.reason}{where}")
    if args.verbose:
        print(f"tried: {shown}")
    return 0 if decision.accept else 1


def register(sub: argparse._SubParsersAction) -> None:
    rcpt = sub.add_parser(
        "rcpt",
        help="valid recipients: build validrcptto.cdb, check an address",
        description="Valid recipients for qmail-smtpd's validrcptto.cdb.",
    )
    rsub = rcpt.add_subparsers(dest="rcpt_command", metavar="COMMAND")
    rsub.required = True
    p = rsub.add_parser(
        "build",
        help="list every valid recipient, or write validrcptto.cdb",
        description=_BUILD_DESCRIPTION,
    )
    _add_build_options(p)
    p.set_defaults(func=_build, prog="qmailkit rcpt build", fast_exit=True)

    p = rsub.add_parser(
        "check",
        help="would qmail-smtpd accept this recipient?",
        description="Say whether qmail-smtpd with the validrcptto.cdb patch accepts ADDRESS, and "
        "which key decided (exact address, then prefix-default@domain from the longest prefix, "
        "then @domain; a value starting with '-' rejects). With --cdb, from that file (what "
        "VALIDRCPTTO_CDB points at); otherwise straight from the live configuration, with the "
        "source file of the key. Exit 0 accepted, 1 rejected, 100 bad input, 111 system trouble.",
    )
    p.add_argument("address")
    p.add_argument("--cdb", metavar="FILE", help="the validrcptto.cdb to ask")
    p.add_argument("-v", "--verbose", action="store_true", help="also list every key tried")
    _add_model_options(p)
    p.set_defaults(func=_check, prog="qmailkit rcpt check")


def mkvalidrcptto_main(argv: Sequence[str] | None = None) -> int:
    """The ``mkvalidrcptto`` command (same as ``qmailkit rcpt build``)."""
    from qmailkit.cli import Parser, exit_now, run

    parser = Parser(prog="mkvalidrcptto", description=_BUILD_DESCRIPTION)
    _add_build_options(parser)
    args = parser.parse_args(argv)
    args.prog = "mkvalidrcptto"
    code = run(_build, args, "mkvalidrcptto")
    if argv is None:
        exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(mkvalidrcptto_main())
