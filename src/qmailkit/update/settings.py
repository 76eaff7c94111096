"""The ``[update]`` table of qmailkit.toml: what ``qmailkit update`` maintains, and how.

    [system]   qmail_home, vpopmail_home, passwd (new: default /etc/passwd)
    [update]   validrcptto, auth, users_cdb, morercpthosts, tcprules, hup, state_dir,
               validrcptto_* (mkvalidrcptto's options), auth_* (mkauth's options)

It is validated by the services config's own machinery (``services.config``:
``Option`` declarations read by its validator, errors ``FILE:LINE: key: ...``),
never by a second TOML reader.  The tcp rules maintained are those of the
``[services]`` of the same file: each service with a ``rules`` cdb and a
``rules_source`` text.

Until ``services.config`` knows the ``[update]`` table and ``system.passwd``
itself, ``load`` takes both out of the parsed document and validates them
here with the same validator; the rest of the file goes through it unchanged.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmailkit import fsutil
from qmailkit.auth.sources import Sources
from qmailkit.errors import InputError, QmailkitError
from qmailkit.qmail.recipients import Options
from qmailkit.services import config as services_config
from qmailkit.services.config import Option, check_abs_path

DEFAULT_STATE_DIR = "/var/lib/qmailkit/update"
DEFAULT_PASSWD = "/etc/passwd"
UID_LIMIT = 2**32 - 2


def _check_uid(value: str) -> tuple[str, str] | None:
    if value.isascii() and value.isdigit() and int(value) <= UID_LIMIT:
        return None
    return (f"not a user id: {services_config.shown(value)}", 'give numbers, e.g. ["1001"]')


def _check_mode(value: str) -> tuple[str, str] | None:
    digits = value
    if digits and all(c in "01234567" for c in digits) and int(digits, 8) <= 0o777:
        if int(digits, 8) & 0o007:
            return ("gives other users access to password hashes", 'use "0640" or "0600"')
        return None
    return (f"not an octal file mode: {services_config.shown(value)}", 'write e.g. "0640"')


_AUTO = ("auto", "yes", "no")

#: the keys of [update]; the names are the interface (docs/update.md)
OPTIONS: dict[str, Option] = {
    "validrcptto": Option(
        "str",
        "/var/qmail/control/validrcptto.cdb",
        "validrcptto.cdb; empty: not maintained",
        check=check_abs_path,
    ),
    "auth": Option(
        "str",
        "/var/qmail/control/auth.cdb",
        "auth.cdb; empty: not maintained",
        check=check_abs_path,
    ),
    "users_cdb": Option("bool", True, "users/assign -> users/cdb (qmail-newu)"),
    "morercpthosts": Option("bool", True, "control/morercpthosts -> morercpthosts.cdb"),
    "tcprules": Option("bool", True, "the rules_source of each [services] entry -> its rules cdb"),
    "hup": Option("bool", True, "HUP qmail-send when locals/virtualdomains change"),
    "state_dir": Option(
        "str", DEFAULT_STATE_DIR, "the updater's state", check=check_abs_path, empty_ok=False
    ),
    "max_shrink": Option("int", 20, "percent of entries a rebuilt cdb may lose", min=0, max=100),
    # mkvalidrcptto's options
    "validrcptto_skip_alias": Option("bool", False, "mkvalidrcptto -n"),
    "validrcptto_uid_min": Option("int", 500, "--uid-min", min=0, max=UID_LIMIT),
    "validrcptto_uid_max": Option("int", 65000, "--uid-max", min=0, max=UID_LIMIT),
    "validrcptto_uid_ignore": Option("list", [], "--uid-ignore", check=_check_uid),
    "validrcptto_exclude": Option("list", [], "--exclude"),
    "validrcptto_smtproutes_dir": Option("str", "", "--smtproutes-dir", check=check_abs_path),
    "validrcptto_qmail_ext": Option("str", "auto", "--qmail-ext / --no-qmail-ext", choices=_AUTO),
    "validrcptto_vpopmail_sql": Option("str", "auto", "--vpopmail-sql", choices=_AUTO),
    # mkauth's options
    "auth_vpopmail": Option("bool", True, "mkauth without --no-vpopmail"),
    "auth_shadow": Option("str", "", "--shadow", check=check_abs_path),
    "auth_settings": Option("str", "", "--settings", check=check_abs_path),
    "auth_min_uid": Option("int", 500, "--min-uid", min=0, max=UID_LIMIT),
    "auth_max_uid": Option("int", 65000, "--max-uid", min=0, max=UID_LIMIT),
    "auth_exclude": Option("list", [], "--exclude"),
    "auth_mode": Option("str", "0640", "--mode", check=_check_mode, empty_ok=False),
}

_SYSTEM_KEYS = {"qmail_home", "vpopmail_home", "courier_prefix", "path", "passwd"}


@dataclass(frozen=True)
class RulesFile:
    """One tcp rules text and the cdb tcprules makes of it (from ``[services.NAME]``)."""

    service: str
    source: str
    cdb: str


@dataclass(frozen=True)
class Settings:
    """The validated ``[update]`` table with the ``[system]`` paths it needs."""

    config_path: str
    qmail_home: str
    vpopmail_home: str | None  # None: ~vpopmail from the passwd file
    passwd: str
    values: dict[str, Any]
    rules: tuple[RulesFile, ...]

    @property
    def state_dir(self) -> str:
        return str(self.values["state_dir"])

    @property
    def max_shrink(self) -> float:
        return int(self.values["max_shrink"]) / 100


def _read_text(path: str) -> str:
    try:
        raw = fsutil.read_bounded(path, services_config.CONFIG_LIMIT)
    except FileNotFoundError:
        raise InputError(
            "config file not found",
            path=path,
            hint="create it (see docs/update.md) or pass --config",
        ) from None
    except QmailkitError as err:
        raise InputError(f"cannot read config: {err.message}", path=path, hint=err.hint) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            "not valid UTF-8", path=path, line=raw[: err.start].count(b"\n") + 1
        ) from None


def _parse(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError):
        services_config.loads(text, path)  # raises its message, with the line
        raise  # pragma: no cover - loads raised


def load(path: str | os.PathLike[str]) -> Settings:
    """Read and validate the config file at ``path`` for ``qmailkit update``."""
    path = os.fspath(path)
    text = _read_text(path)
    data = _parse(text, path)
    v = services_config._Validator(text, path)
    update_raw = v.table("update", data.pop("update", {}))
    system_raw = v.table("system", data.get("system", {}))
    passwd_raw = system_raw.get("passwd", DEFAULT_PASSWD)
    data["system"] = {k: x for k, x in system_raw.items() if k != "passwd"}
    v.unknown("system", system_raw, _SYSTEM_KEYS, "[system]")
    passwd = v.value(
        "system.passwd", Option("str", None, "", check=check_abs_path, empty_ok=False), passwd_raw
    )
    v.unknown("update", update_raw, OPTIONS, "[update]")
    values = {
        k: (v.value(f"update.{k}", o, update_raw[k]) if k in update_raw else o.default)
        for k, o in OPTIONS.items()
    }
    for low, high in (
        ("validrcptto_uid_min", "validrcptto_uid_max"),
        ("auth_min_uid", "auth_max_uid"),
    ):
        if values[low] > values[high]:
            raise v.fail(f"update.{low}", f"is above {high}", "give a window low <= high")
    system = v.system(data["system"])
    rules: list[RulesFile] = []
    if data.get("services"):
        cfg = v.config(data)
        for svc in cfg.services.values():
            source, target = svc.options.get("rules_source"), svc.options.get("rules")
            if source and target:
                rules.append(RulesFile(svc.name, source, target))
    return Settings(
        config_path=path,
        qmail_home=system.qmail_home,
        vpopmail_home=system_raw.get("vpopmail_home") and system.vpopmail_home,
        passwd=passwd,
        values=values,
        rules=tuple(rules),
    )


def recipients_options(settings: Settings) -> Options:
    """mkvalidrcptto's ``qmail.recipients.Options`` for these settings."""

    def tristate(value: str) -> bool | None:
        return None if value == "auto" else value == "yes"

    values = settings.values
    return Options(
        qmail_home=Path(settings.qmail_home),
        vpopmail_home=Path(settings.vpopmail_home) if settings.vpopmail_home else None,
        passwd=Path(settings.passwd),
        uid_min=values["validrcptto_uid_min"],
        uid_max=values["validrcptto_uid_max"],
        uid_ignore=frozenset(int(u) for u in values["validrcptto_uid_ignore"]),
        skip_alias=values["validrcptto_skip_alias"],
        smtproutes_dir=(
            Path(values["validrcptto_smtproutes_dir"])
            if values["validrcptto_smtproutes_dir"]
            else None
        ),
        exclude=frozenset(values["validrcptto_exclude"]),
        qmail_ext=tristate(values["validrcptto_qmail_ext"]),
        vpopmail_sql=tristate(values["validrcptto_vpopmail_sql"]),
    )


def auth_sources(settings: Settings) -> Sources:
    """mkauth's ``auth.Sources`` for these settings."""
    values = settings.values
    return Sources(
        qmail_home=Path(settings.qmail_home),
        vpopmail=values["auth_vpopmail"],
        vpopmail_home=Path(settings.vpopmail_home) if settings.vpopmail_home else None,
        shadow=Path(values["auth_shadow"]) if values["auth_shadow"] else None,
        passwd=Path(settings.passwd),
        min_uid=values["auth_min_uid"],
        max_uid=values["auth_max_uid"],
        exclude=list(values["auth_exclude"]),
        settings=Path(values["auth_settings"]) if values["auth_settings"] else None,
    )
