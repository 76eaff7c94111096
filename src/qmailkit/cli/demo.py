"""``qmailkit demo``: run the guided tour in a sandbox directory."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="show what qmailkit does, in a throw-away sandbox",
        description=(
            "Build a sandbox with a sample qmail server (services, logs, databases) and run "
            "qmailkit's commands on it. Nothing outside the sandbox is touched; every process "
            "the demo starts is stopped before it ends."
        ),
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="build the sandbox in DIR instead of a new temp directory",
    )
    parser.add_argument(
        "--clean",
        action="store_true",
        help="remove the sandbox at the end (by default it is kept for you to look at)",
    )
    parser.add_argument(
        "--part",
        action="append",
        metavar="NAME",
        choices=("logs", "cdb", "rcpt", "services"),  # qmailkit.demo.PARTS, not imported here
        help="run only this part (repeatable): logs, cdb, rcpt, services",
    )
    parser.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    from qmailkit import demo as tour

    def say(text: str) -> None:
        print(text, flush=True)

    if args.dir:
        sandbox = tour.sandbox_dir(Path(args.dir).resolve())
    else:
        sandbox = Path(tempfile.mkdtemp(prefix="qmailkit-demo-"))
    say(f"qmailkit demo: sandbox {sandbox}")
    try:
        ran = tour.run(sandbox, say, only=args.part)
    finally:
        if args.clean:
            shutil.rmtree(sandbox, ignore_errors=True)
    if not ran:
        print("qmailkit demo: no demo part is available", file=sys.stderr)
        return 111
    say("")
    say("demo finished: " + ", ".join(ran))
    if not args.clean:
        say(f"everything it made is in {sandbox} (remove it with: rm -r {sandbox})")
    return 0
