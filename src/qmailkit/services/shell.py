"""Writing POSIX sh run scripts whose every config value arrives intact.

Every literal from the config goes through ``quote`` (single quotes, ``'`` written
as ``'\\''``), so it reaches the program as exactly one argument or one environment
value whatever it contains.  Values only known when the service starts (the host
name from control/me, a uid from ``id``) are shell variables, always expanded in
double quotes.

Every script first starts itself again under ``env -i`` with only PATH set (``clean_start``),
so nothing the supervisor was started with (an admin's RELAYCLIENT, LD_PRELOAD...) reaches
the program: only what the script sets does.  The scripts use four small functions, defined
in every script so each one stands alone:

- ``fatal MESSAGE``: print it, sleep 5 (so the supervisor does not spin), exit 1;
- ``have PROGRAM``: true if the program (a path, or a name in PATH) can be run;
- ``setenv NAME VALUE``: export the variable and log ``NAME="VALUE"``;
- ``show_command ARGS``: log ``command-line: `` and the arguments, each quoted for
  the shell when needed, so ``shlex.split`` of the logged text gives back argv.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

_SAFE = re.compile(r"[A-Za-z0-9_./:=@%+,-]+\Z")


def quote(value: str) -> str:
    """``value`` as one shell word, quoted only when needed."""
    if _SAFE.match(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def comment_value(value: object) -> str:
    """A value written in a ``#`` comment: on one line whatever it contains."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "(not set)"
    if isinstance(value, list):  # written as in the config file
        return "[" + ", ".join(comment_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {comment_value(v)}" for k, v in value.items()) + " }"
    # json escapes newlines and other control characters, so the comment cannot end early
    return json.dumps(value, ensure_ascii=False)


def one_line(text: str) -> str:
    """``text`` for a log line: control characters (newlines...) written as escapes."""
    if all(ch >= " " and ch != "\x7f" for ch in text):
        return text
    return json.dumps(text, ensure_ascii=False)[1:-1]


@dataclass(frozen=True)
class Var:
    """A shell expansion known only at start time, e.g. ``Var("LOCAL")`` → "$LOCAL"."""

    name: str

    def word(self) -> str:
        return f'"${self.name}"'


@dataclass(frozen=True)
class Split:
    """A variable expanded *without* quotes on purpose (a list of options from a config file
    such as courier's TCPDOPTS)."""

    name: str

    def word(self) -> str:
        return f"${{{self.name}}}"


@dataclass(frozen=True)
class Raw:
    """Shell text that expands to exactly one word, e.g. ``-address="$IP"``."""

    text: str

    def word(self) -> str:
        return self.text


Word = str | Var | Split | Raw

# Variables the run scripts use themselves, and those the shell gives a meaning:
# the env table may not set them (it would change the command, not just its environment).
SCRIPT_VARIABLES = frozenset(
    {
        "IP",
        "LOCAL",
        "QUSER",
        "QUID",
        "QGID",
        "SUSER",
        "SUID",
        "SGID",
        "DELIVERY",
    }
)
SHELL_VARIABLES = frozenset(
    {
        "PATH",
        "IFS",
        "ENV",
        "CDPATH",
        "PS1",
        "PS2",
        "PS4",
        "OPTIND",
        "OPTARG",
        "PPID",
        "LINENO",
        "PWD",
        "OLDPWD",
        "HOME",
    }
)


def word(w: Word) -> str:
    return quote(w) if isinstance(w, str) else w.word()


PRELUDE = r"""
# fatal MESSAGE: log why the service cannot start, then wait so the supervisor does not spin.
fatal() {
	echo "fatal: $*"
	sleep 5
	exit 1
}

# have PROGRAM: true if PROGRAM (a path, or a name looked up in PATH) can be run.
have() {
	case $1 in
	*/*) [ -f "$1" ] && [ -x "$1" ] ;;
	*) command -v "$1" >/dev/null 2>&1 ;;
	esac
}

# setenv NAME VALUE: export a variable and log it as NAME="VALUE".
setenv() {
	export "$1=$2"
	printf '%s="%s"\n' "$1" "$2"
}

# show_command ARGS: log the command line, each argument quoted for sh when needed.
show_command() {
	_qk_line=command-line:
	for _qk_arg in "$@"; do
		case $_qk_arg in
		'' | *[!A-Za-z0-9_./:=@%+,-]*)
			_qk_quoted=
			_qk_rest=$_qk_arg
			while :; do
				case $_qk_rest in
				*\'*)
					_qk_quoted=$_qk_quoted${_qk_rest%%\'*}"'\\''"
					_qk_rest=${_qk_rest#*\'}
					;;
				*) break ;;
				esac
			done
			_qk_arg="'$_qk_quoted$_qk_rest'"
			;;
		esac
		_qk_line="$_qk_line $_qk_arg"
	done
	printf '%s\n' "$_qk_line"
}
"""


# The marker holds the shell's pid: exec keeps the pid, so only the shell that env started
# sees its own pid there; a marker inherited from elsewhere never matches.
CLEAN_MARK = "_qk_clean"


def clean_start(search_path: Iterable[str]) -> list[str]:
    """The lines that restart the script from an empty environment, then set PATH."""
    return [
        "# Start again from an empty environment: only PATH and what this script exports",
        "# reach the program, never what the supervisor was started with.",
        f'[ "${{{CLEAN_MARK}-}}" = "$$" ] || '
        f'exec /usr/bin/env -i {CLEAN_MARK}="$$" /bin/sh "$0" "$@"',
        f"unset {CLEAN_MARK}",
        f"PATH={quote(':'.join(search_path))}",
        "export PATH",
    ]


class Script:
    """A run script built line by line."""

    def __init__(
        self,
        title: str,
        config_path: str,
        settings: Iterable[tuple[str, object, str]],
        search_path: Iterable[str],
        *,
        prelude: bool = True,
    ) -> None:
        self.lines: list[str] = ["#!/bin/sh"]
        self.lines.append(f"# {title}")
        self.lines.append(f"# Generated by qmailkit from {comment_value(config_path)}.")
        self.lines.append('# Do not edit: change the config and run "qmailkit services apply".')
        settings = list(settings)
        if settings:
            self.lines.append("#")
            self.lines.append("# Effective settings (original variable in brackets):")
            width = max(len(k) for k, _, _ in settings)
            for key, value, var in settings:
                text = f"#   {key.ljust(width)} = {comment_value(value)}"
                if var:
                    text += f"  [{var}]"
                self.lines.append(text)
        self.blank()
        self.lines.extend(clean_start(search_path))
        if prelude:
            self.lines.extend(PRELUDE.rstrip("\n").split("\n"))
        self.blank()

    def blank(self) -> None:
        if self.lines[-1] != "":
            self.lines.append("")

    def comment(self, text: str) -> None:
        for part in text.split("\n"):
            self.lines.append(f"# {part}".rstrip())

    def line(self, text: str) -> None:
        self.lines.append(text)

    def assign(self, name: str, value: str) -> None:
        self.lines.append(f"{name}={quote(value)}")

    def setenv(self, name: str, value: Word) -> None:
        self.lines.append(f"setenv {name} {word(value)}")

    def fatal_unless(self, test: str, message: str) -> None:
        """``test`` is a shell condition; when it fails the service does not start."""
        self.lines.append(f"{test} || fatal {quote(one_line(message))}")

    def warn_unless(self, test: str, message: str) -> None:
        """``test`` is a shell condition; when it fails a warning is logged."""
        self.lines.append(f"{test} ||")
        self.lines.append(f"\techo {quote('warning: ' + one_line(message))}")

    def command(self, words: Iterable[Word]) -> None:
        """Set the final command, log it, and exec it."""
        parts = [word(w) for w in words]
        self.blank()
        self.lines.append("# The command, logged before it runs.")
        line = "set --"
        body: list[str] = []
        for p in parts:
            if len(line) + 1 + len(p) > 96 and line.strip() != "set --":
                body.append(line + " \\")
                line = "\t" + p
            else:
                line += " " + p
        body.append(line)
        self.lines.extend(body)
        self.lines.append('have "$1" || fatal "program not found: $1"')
        self.lines.append('show_command "$@"')
        self.lines.append('exec "$@"')

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
