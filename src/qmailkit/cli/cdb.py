"""``qmailkit cdb``: make, dump, get and stats for djb's constant databases."""

from __future__ import annotations

import argparse
import sys

from qmailkit.cli.options import cdb_mode


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "cdb",
        help="make, dump, query constant databases (cdbmake, cdbdump, cdbget)",
        description="Make, dump and query djb constant databases, byte-compatible with "
        "cdbmake, cdbdump and cdbget.",
    )
    cmds = parser.add_subparsers(dest="cdb_command", metavar="SUBCOMMAND")
    cmds.required = True

    make = cmds.add_parser(
        "make",
        help="build FILE from cdbmake input on stdin",
        description="Read cdbmake input (+KLEN,DLEN:KEY->DATA lines, then a blank line) on "
        "standard input and atomically replace FILE with the cdb.  Malformed input: "
        "exit 111, FILE untouched.",
    )
    make.add_argument("file", metavar="FILE")
    make.add_argument(
        "--lines",
        action="store_true",
        help="read 'KEY' or 'KEY VALUE' lines instead (like cdbmake-12); "
        "blank lines and #comments are skipped",
    )
    make.add_argument(
        "--mode",
        type=cdb_mode,
        default=0o644,
        metavar="OCTAL",
        help="file mode, octal (default 644; setuid, setgid and sticky bits and write "
        "permission for others are refused)",
    )
    make.set_defaults(func=cmd_make)

    dump = cmds.add_parser(
        "dump",
        help="print FILE in cdbmake format",
        description="Print every record of FILE in cdbmake format, in file order, ending "
        "with a blank line (the same bytes as cdbdump and cdb -d).",
    )
    dump.add_argument("file", metavar="FILE")
    dump.set_defaults(func=cmd_dump)

    get = cmds.add_parser(
        "get",
        help="print the value of KEY in FILE (exit 100 if absent)",
        description="Print the first value stored under KEY, as raw bytes with nothing "
        "added (like cdbget).  Exit 100 if KEY is absent.",
    )
    get.add_argument("file", metavar="FILE")
    get.add_argument("key", metavar="KEY")
    get.add_argument(
        "--all", action="store_true", help="print every value of KEY, each followed by a newline"
    )
    get.set_defaults(func=cmd_get)

    stats = cmds.add_parser(
        "stats",
        help="records, sizes and hash-table probes of FILE",
        description="Check FILE and print its record count, sizes and how many probes "
        "lookups take.",
    )
    stats.add_argument("file", metavar="FILE")
    stats.set_defaults(func=cmd_stats)


def cmd_make(args: argparse.Namespace) -> int:
    from qmailkit.cdb import text
    from qmailkit.cli import stdin_binary

    text.build(args.file, stdin_binary(), lines=args.lines, mode=args.mode)
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    from qmailkit import cdb
    from qmailkit.cdb import text

    with cdb.Reader(args.file) as reader:
        text.dump(reader.items(), sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    import os

    from qmailkit import cdb

    with cdb.Reader(args.file) as reader:
        values = reader.get_all(os.fsencode(args.key))
    if not values:
        return 100
    out = sys.stdout.buffer
    if args.all:
        out.write(b"".join(value + b"\n" for value in values))
    else:
        out.write(values[0])
    out.flush()
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from qmailkit import cdb

    found = cdb.stats(args.file)
    distances = " ".join(
        f"{'>9' if distance == 10 else f'd{distance}'}:{count}"
        for distance, count in enumerate(found.distances)
    )
    print(f"records:      {found.records}")
    print(f"unique keys:  {found.unique_keys}")
    print(f"file size:    {found.size} bytes")
    print(f"keys:         {found.key_bytes} bytes (lengths {found.min_key} to {found.max_key})")
    print(f"values:       {found.value_bytes} bytes")
    print(f"hash slots:   {found.slots}")
    print(f"distances:    {distances}")
    return 0
