"""What ``qmailkit update`` maintains (issue 11 section 2), as data: target, sources, builder.

=====================  ====================================  =====================
target                 sources                               builder
=====================  ====================================  =====================
users/cdb              users/assign                          newu (assign.compile_users_cdb)
morercpthosts.cdb      control/morercpthosts                 newmrh (control.compile_morercpthosts)
each rules cdb         its rules text ([services] rules_source)  tcprules.compile_rules
validrcptto.cdb        everything mkvalidrcptto reads        build_validrcptto (rcpt)
auth.cdb               everything mkauth reads               mkauth (auth.write_cdb)
=====================  ====================================  =====================

The order of ``TARGETS`` is the dependency order: users/cdb and
morercpthosts.cdb are sources of validrcptto.cdb, so they are built first and
their new digests are seen by the targets after them in the same pass.

Every builder installs through ``cdb.install`` (the guards, the lock
``.FILE.lock`` every builder of that file takes, a staged temp name of its
own): a manual ``mkvalidrcptto -c`` or ``qmailkit newu`` waits for, or is
refused by, the updater on the same file, never interleaves with it.

``RESTART_FILES`` are read by qmail-send only at its start (running-qmail.md
A.4): a change is reported as "restart needed", never acted on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from qmailkit import auth, rcpt, tcprules
from qmailkit.qmail import assign, control, dotqmail, shadow, vpopmail
from qmailkit.update.settings import RulesFile, Settings, auth_sources, recipients_options
from qmailkit.update.state import MISSING, State

#: control files qmail-send reads only at start (notqmail): a change needs a restart
RESTART_FILES = (
    "queuelifetime",
    "concurrencylocal",
    "concurrencyremote",
    "percenthack",
    "envnoathost",
    "bouncefrom",
    "bouncehost",
    "doublebouncehost",
    "doublebounceto",
    "me",
)
#: the control files mkvalidrcptto reads (qmail-smtpd, qmail-send, qmail-local's view)
RCPT_CONTROL_FILES = (
    "rcpthosts",
    "locals",
    "me",
    "virtualdomains",
    "smtproutes",
    "defaultdelivery",
)
#: what a HUP makes qmail-send reread
HUP_FILES = ("locals", "virtualdomains")


def is_dotqmail(name: str) -> bool:
    return name.startswith(".qmail")


def is_domain_file(name: str) -> bool:
    return name.startswith(".qmail") or name in ("vpasswd", "vpasswd.cdb")


def is_vpasswd(name: str) -> bool:
    return name in ("vpasswd", "vpasswd.cdb")


def every_name(name: str) -> bool:
    return not name.startswith(".")


@dataclass(frozen=True)
class Built:
    """What a builder did: entries in the target, and whether the file was replaced."""

    keys: int
    written: bool


class Gather:
    """The digests of one target's sources now (``State.digest``: stat first, hash if moved)."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.found: dict[str, str] = {}
        self.dirs: set[str] = set()

    def file(self, path: str | os.PathLike[str], *, control: bool = False) -> None:
        path = os.fspath(path)
        self.found[path] = self.state.digest(path, control=control)
        self.dirs.add(os.path.dirname(path))

    def files_in(self, directory: str, wanted: Callable[[str], bool]) -> None:
        """Every ``wanted`` name in ``directory`` is a source, and so is the list itself
        (a new file is a change even before it is read)."""
        names = self.state.entries(directory, wanted)
        self.found[directory + "/"] = "\0".join(names) if names else MISSING
        self.dirs.add(directory)
        for name in names:
            self.file(os.path.join(directory, name))


@dataclass(frozen=True)
class Target:
    """One database: ``gather`` its sources, ``build`` it (``force`` past the guards)."""

    name: str
    path: str
    gather: Callable[[Gather], None]
    build: Callable[[bool], Built]
    wanted: Callable[[], bool] = lambda: True  # False: nothing to maintain (no source file)


# -- what the homes and domains are (read only when users/assign or passwd changed) ----------


def _homes(settings: Settings, state: State, keyed_by: Iterable[str]) -> dict[str, list[str]]:
    """The directories whose files are sources: vpopmail domains (from users/assign),
    homes of users/assign entries and of passwd accounts in the uid window, ~alias,
    and the fastforward cdbs ~alias/.qmail-default names."""
    key = "\0".join([*keyed_by, repr(sorted(settings.values.items()))])
    cached = state.derived.get("homes")
    if isinstance(cached, dict) and cached.get("key") == key:
        return {k: list(v) for k, v in cached.items() if k != "key"}
    users = os.path.join(settings.qmail_home, "users", "assign")
    domains: list[str] = []
    homes: list[str] = []
    try:
        entries = assign.read(users)
    except Exception:  # noqa: BLE001 - the builder reports a bad users/assign
        entries = []
    for entry in entries:
        (domains if entry.wildcard else homes).append(entry.home)
    try:
        accounts = shadow.read_passwd(settings.passwd)
    except Exception:  # noqa: BLE001 - the builders report a bad passwd
        accounts = []
    values = settings.values
    ignore = {int(u) for u in values["validrcptto_uid_ignore"]}
    window = shadow.uids_in_window(
        accounts, values["validrcptto_uid_min"], values["validrcptto_uid_max"]
    )
    homes += [e.home for e in window.values() if e.uid not in ignore]
    alias = next((e.home for e in accounts if e.name == "alias"), None)
    alias = alias or os.path.join(settings.qmail_home, "alias")
    try:
        vpop = str(
            vpopmail.home(settings.passwd, settings.vpopmail_home, default=vpopmail.DEFAULT_HOME)
        )
    except Exception:  # noqa: BLE001
        vpop = str(vpopmail.DEFAULT_HOME)
    found = {
        "domains": sorted(set(domains)),
        "homes": sorted(set(homes) - set(domains)),
        "alias": [alias],
        "vpopmail": [vpop],
    }
    state.derived["homes"] = {"key": key, **found}
    return found


def _fastforward_cdbs(alias_home: str) -> list[str]:
    out = []
    for name in (".qmail-default",):
        path = os.path.join(alias_home, name)
        try:
            found = dotqmail.classify(path)
        except Exception:  # noqa: BLE001 - missing or unreadable: mkvalidrcptto says so
            continue
        if found.cdb:
            out.append(found.cdb)
    return out


# -- the targets ------------------------------------------------------------------------------


def _newu(settings: Settings) -> Target:
    home = settings.qmail_home
    source = os.path.join(home, "users", "assign")

    def build(force: bool) -> Built:
        entries = assign.compile_users_cdb(home, force=force, max_shrink=settings.max_shrink)
        return Built(len(entries), True)

    return Target(
        "users/cdb",
        os.path.join(home, "users", "cdb"),
        lambda g: g.file(source),
        build,
        lambda: os.path.lexists(source),
    )


def _newmrh(settings: Settings) -> Target:
    home = settings.qmail_home
    source = os.path.join(home, "control", "morercpthosts")

    def build(force: bool) -> Built:
        count = control.compile_morercpthosts(home, force=force, max_shrink=settings.max_shrink)
        return Built(count, True)

    return Target(
        "morercpthosts.cdb",
        source + ".cdb",
        lambda g: g.file(source, control=True),
        build,
        lambda: os.path.lexists(source),
    )


def _tcprules(rules: RulesFile) -> Target:
    def build(force: bool) -> Built:
        parsed = tcprules.compile_source(rules.source)
        return Built(tcprules.compile_rules(parsed, rules.cdb), True)

    return Target(
        f"tcprules {rules.service}",
        rules.cdb,
        lambda g: g.file(rules.source),
        build,
        lambda: os.path.lexists(rules.source),
    )


def build_validrcptto(settings: Settings, force: bool) -> Built:
    """The validrcptto.cdb build (a full ``mkvalidrcptto -c``): the one place a per-part
    incremental build will replace."""
    path = settings.values["validrcptto"]
    with rcpt.lock(path) as state_fd:
        rec = rcpt.build(recipients_options(settings))
        result = rcpt.write_cdb(
            path, rec, force=force, max_shrink=settings.max_shrink, state_fd=state_fd
        )
    return Built(result.count, result.written)


def _gather_validrcptto(settings: Settings, g: Gather) -> None:
    home = settings.qmail_home
    ctl = os.path.join(home, "control")
    for name in RCPT_CONTROL_FILES:
        g.file(os.path.join(ctl, name), control=True)
    g.file(os.path.join(ctl, "morercpthosts.cdb"))
    assign_path = os.path.join(home, "users", "assign")
    g.file(assign_path)
    g.file(os.path.join(home, "users", "cdb"))
    g.file(settings.passwd)
    homes = _homes(settings, g.state, (g.found[assign_path], g.found[settings.passwd]))
    for vpop in homes["vpopmail"]:
        g.file(os.path.join(vpop, "include", "vpopmail_config.h"))
    for directory in homes["domains"]:
        g.files_in(directory, is_domain_file)
    for directory in homes["homes"] + homes["alias"]:
        g.files_in(directory, is_dotqmail)
    for path in _fastforward_cdbs(homes["alias"][0]):
        g.file(path)
    if settings.values["validrcptto_smtproutes_dir"]:
        g.files_in(settings.values["validrcptto_smtproutes_dir"], every_name)


def _validrcptto(settings: Settings) -> Target:
    return Target(
        "validrcptto.cdb",
        settings.values["validrcptto"],
        lambda g: _gather_validrcptto(settings, g),
        lambda force: build_validrcptto(settings, force),
    )


def _auth(settings: Settings) -> Target:
    values = settings.values
    path = values["auth"]

    def gather(g: Gather) -> None:
        assign_path = os.path.join(settings.qmail_home, "users", "assign")
        g.file(assign_path)
        g.file(settings.passwd)
        for extra in (values["auth_shadow"], values["auth_settings"]):
            if extra:
                g.file(extra)
        if values["auth_vpopmail"]:
            homes = _homes(settings, g.state, (g.found[assign_path], g.found[settings.passwd]))
            for directory in homes["domains"]:
                g.files_in(directory, is_vpasswd)

    def build(force: bool) -> Built:
        found = auth.collect(auth_sources(settings))
        result = auth.write_cdb(
            path,
            found,
            mode=int(values["auth_mode"], 8),
            only_if_changed=True,
            max_shrink=settings.max_shrink,
            force=force,
        )
        return Built(result.count, result.written)

    return Target("auth.cdb", path, gather, build)


def targets(settings: Settings) -> list[Target]:
    """The targets these settings maintain, in dependency order."""
    values = settings.values
    out: list[Target] = []
    if values["users_cdb"]:
        out.append(_newu(settings))
    if values["morercpthosts"]:
        out.append(_newmrh(settings))
    if values["tcprules"]:
        out += [_tcprules(r) for r in settings.rules]
    if values["validrcptto"]:
        out.append(_validrcptto(settings))
    if values["auth"]:
        out.append(_auth(settings))
    return out
