"""``qmailkit update``: keep qmail's databases current and qmail-send in step (docs/update.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from qmailkit.cli.options import DEFAULT_CONFIG, add_config

DESCRIPTION = (
    "Rebuild the databases whose sources changed (users/cdb, morercpthosts.cdb, the tcp rules "
    "cdbs of the [services], validrcptto.cdb, auth.cdb), in dependency order, then HUP "
    "qmail-send if locals or virtualdomains changed. Changes are found by content, not mtime. "
    "One line per action on stdout. 'status' shows what was built when and what is pending. "
    "Exit 0 done, 100 a guard refused a build or the HUP (the line says which; --force "
    "overrides what may be overridden), 111 temporary trouble."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action", nargs="?", choices=["status"], help="status: show the state instead of a pass"
    )
    add_config(p)
    p.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
    p.add_argument(
        "--force", action="store_true", help="build and HUP past the guards that allow it"
    )
    p.add_argument("--watch", action="store_true", help="keep running: a pass on every change")
    p.add_argument("--json", action="store_true", help="status: as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="also say what was up to date")
    p.add_argument("-q", "--quiet", action="store_true", help="only refusals and errors")


def _print_pass(result: object, args: argparse.Namespace) -> None:
    for level, text in result.lines:  # type: ignore[attr-defined]
        shown = {"error": True, "action": not args.quiet, "info": args.verbose}[level]
        if shown:
            print(text, flush=True)


def _update(args: argparse.Namespace) -> int:
    import json

    from qmailkit.cli.options import config_path
    from qmailkit.update import run, settings

    cfg = settings.load(config_path(args.config))
    if args.action == "status":
        report = run.status(cfg)
        if args.json:
            print(json.dumps(report, indent=1, sort_keys=True))
        else:
            for line in run.status_lines(report):
                print(line)
        return 0
    if args.watch:
        from qmailkit.update import service

        return service.watch(
            cfg,
            force=args.force,
            emit=lambda r: _print_pass(r, args),
            say=lambda text: print(text, flush=True),
        )
    result = run.run_pass(cfg, force=args.force, dry_run=args.dry_run)
    _print_pass(result, args)
    return result.exit_code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "update",
        help="rebuild changed databases, HUP qmail-send (replaces cron.qmail)",
        description=DESCRIPTION,
    )
    _add_arguments(p)
    p.set_defaults(func=_update)


def main(argv: Sequence[str] | None = None) -> int:
    """``qmailkit update`` on its own (until the command list registers it)."""
    from qmailkit.cli import Parser, run

    parser = Parser(prog="qmailkit update", description=DESCRIPTION)
    _add_arguments(parser)
    return run(_update, parser.parse_args(argv), "qmailkit update")


__all__ = ["DEFAULT_CONFIG", "main", "register"]

if __name__ == "__main__":
    sys.exit(main())
