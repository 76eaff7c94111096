"""qmailkit.update.hup: when qmail-send needs a HUP, the guards, the record, and run()
against the stand-in, alone and under real svscan, runsvdir and s6-svscan."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from support import wait_for
from support.qmail_send import SendSite, make_home, other_holder

from qmailkit.demo import qmail_send
from qmailkit.qmail.send import SENDMUTEX, Holder
from qmailkit.update import hup
from qmailkit.update.hup import (
    ControlFile,
    HupInputs,
    NotNeeded,
    Record,
    Refusal,
    Refused,
    Send,
    Sent,
)

KINDS = ["daemontools", "runit", "s6"]
START = 1_800_000_000.0
HOLDER = Holder(4242, "qmail-send", 9999, START, "/q/queue/lock/sendmutex", 1, 2)


def cf(path: str, data: bytes | None, ctime: float = START - 100) -> ControlFile:
    if data is None:
        return ControlFile(path, None, None)
    return ControlFile(path, tuple(hup.numbered_lines(data)), ctime)


def inputs(
    locals_data: bytes | None = b"a.example\nb.example\n",
    vdoms: bytes | None = b"v.example:alice\n",
    rcpthosts: bytes | None = b"a.example\n",
    ctime: float = START - 100,
) -> HupInputs:
    return HupInputs(
        cf("/q/control/locals", locals_data, ctime),
        cf("/q/control/virtualdomains", vdoms, ctime),
        cf("/q/control/rcpthosts", rcpthosts, ctime),
        START - 1000,
    )


def record_for(given: HupInputs, holder: Holder = HOLDER, event: str = "hup") -> Record:
    return Record(
        holder.pid,
        holder.start_ticks,
        given.digest,
        tuple(given.locals_domains()),
        START,
        event,
    )


# -- effective content -------------------------------------------------------------


def test_effective_lines_follow_control_readfile():
    data = b"# comment\n\na.example  \t\n  lead.example\nb.example\r\n#x\r\n\r\nc.example#not\n"
    assert hup.numbered_lines(data) == [
        (3, b"a.example"),
        (4, b"  lead.example"),
        (5, b"b.example\r"),
        (7, b"\r"),
        (8, b"c.example#not"),
    ]
    assert hup.effective_lines(b"") == []


def test_comment_only_edit_is_not_needed():
    before = inputs()
    after = inputs(locals_data=b"# added a comment\na.example   \n\nb.example\n", ctime=START + 50)
    assert after.digest == before.digest
    assert hup.decide(after, HOLDER, record_for(before)) == NotNeeded(
        "qmail-send pid 4242 already has this content"
    )


def test_changed_content_with_a_record_for_this_qmail_send():
    before = inputs()
    after = inputs(locals_data=b"a.example\nb.example\nc.example\n")
    decision = hup.decide(after, HOLDER, record_for(before))
    assert decision == Send(HOLDER, "locals/virtualdomains changed since its hup")
    assert str(decision) == (
        "would hup qmail-send pid 4242: locals/virtualdomains changed since its hup"
    )


def test_without_a_record_ctime_against_start_time():
    assert hup.decide(inputs(ctime=START + 5), HOLDER, None) == Send(
        HOLDER, "locals/virtualdomains changed after it started"
    )
    # within START_MARGIN before the start: a doubt, so a HUP
    assert isinstance(hup.decide(inputs(ctime=START - 0.5), HOLDER, None), Send)
    assert hup.decide(inputs(ctime=START - 2), HOLDER, None) == NotNeeded(
        "qmail-send pid 4242 already has this content"
    )
    # a record of an earlier qmail-send says nothing about this one: ctime decides
    old = Record(17, 5, "0" * 64, ("a.example",), START - 5000, "hup")
    assert hup.decide(inputs(ctime=START - 2), HOLDER, old) == NotNeeded(
        "qmail-send pid 4242 already has this content"
    )
    assert isinstance(hup.decide(inputs(ctime=START + 2), HOLDER, old), Send)


def test_no_holder_or_another_program():
    assert hup.decide(inputs(ctime=START + 5), None, None) == NotNeeded(
        "qmail-send is not running; it reads the files when it starts"
    )
    other = Holder(77, "python3", 5, START, "/q/queue/lock/sendmutex", 1, 2)
    assert str(hup.decide(inputs(ctime=START + 5), other, None)) == (
        "no hup: the lock is held by pid 77 ('python3'), not qmail-send: qmail-send is not running"
    )


# -- guards ---------------------------------------------------------------------------


def test_empty_locals_is_refused_and_force_overrides():
    given = inputs(locals_data=b"# nothing\n\n", ctime=START + 5)
    refusal = Refusal(
        "is empty: qmail-send would treat no domain as local and bounce all local mail",
        "/q/control/locals",
        overridable=True,
    )
    decision = hup.decide(given, HOLDER, None)
    assert decision == Refused(4242, (refusal,))
    assert decision.overridable is True
    assert str(decision) == (
        "hup of qmail-send pid 4242 refused: /q/control/locals: is empty: qmail-send would "
        "treat no domain as local and bounce all local mail "
        "(check the file, then run again with --force)"
    )
    assert hup.decide(given, HOLDER, None, force=True) == Send(
        HOLDER, "locals/virtualdomains changed after it started", (refusal,)
    )


def test_locals_and_me_missing_is_refused():
    given = HupInputs(
        cf("/q/control/me", None),
        cf("/q/control/virtualdomains", b""),
        cf("/q/control/rcpthosts", b"a.example\n"),
        START + 5,
    )
    assert str(hup.decide(given, HOLDER, None)) == (
        "hup of qmail-send pid 4242 refused: /q/control/me: is missing, and so is "
        "control/locals: qmail-send would treat no domain as local and bounce all local mail "
        "(check the file, then run again with --force)"
    )


def test_cr_is_refused_even_with_force():
    given = inputs(vdoms=b"v.example:alice\r\nw.example:bob\r\n", ctime=START + 5)
    expected = Refused(
        4242,
        (
            Refusal(
                "contains a CR (a DOS line end?): qmail keeps it, the name never matches",
                "/q/control/virtualdomains",
                1,
            ),
        ),
    )
    assert hup.decide(given, HOLDER, None) == expected
    assert hup.decide(given, HOLDER, None, force=True) == expected
    assert expected.overridable is False
    assert str(expected) == (
        "hup of qmail-send pid 4242 refused: /q/control/virtualdomains:1: contains a CR "
        "(a DOS line end?): qmail keeps it, the name never matches (fix the file)"
    )
    # in rcpthosts too; a CR inside a comment line is harmless (qmail drops the line)
    rcpt = inputs(rcpthosts=b"a.example\r\n", ctime=START + 5)
    assert [str(r) for r in hup.decide(rcpt, HOLDER, None).refusals] == [
        "/q/control/rcpthosts:1: contains a CR (a DOS line end?): qmail keeps it, "
        "the name never matches (fix the file)"
    ]
    commented = inputs(locals_data=b"# edited on DOS\r\na.example\n", ctime=START + 5)
    assert isinstance(hup.decide(commented, HOLDER, None), Send)


def test_shrink_past_half_is_refused():
    before = inputs(locals_data=b"a.example\nb.example\nc.example\nd.example\n")
    half = inputs(locals_data=b"a.example\nb.example\n")
    assert isinstance(hup.decide(half, HOLDER, record_for(before)), Send)
    shrunk = inputs(locals_data=b"A.example\n")
    decision = hup.decide(shrunk, HOLDER, record_for(before))
    assert str(decision) == (
        "hup of qmail-send pid 4242 refused: /q/control/locals: lost 3 of the 4 domains of the "
        "last HUP (more than 50%), e.g. b.example (check the file, then run again with --force)"
    )
    forced = hup.decide(shrunk, HOLDER, record_for(before), force=True)
    assert isinstance(forced, Send) and len(forced.overridden) == 1


def test_virtualdomains_line_without_colon_is_refused():
    given = inputs(vdoms=b"# virtual\nv.example:alice\nw.example\n", ctime=START + 5)
    decision = hup.decide(given, HOLDER, None, force=True)
    assert decision == Refused(
        4242,
        (
            Refusal(
                "line has no colon: qmail-send ignores it (write DOMAIN:PREFIX)",
                "/q/control/virtualdomains",
                3,
            ),
        ),
    )


def test_missing_rcpthosts_is_reported_in_every_result():
    error = (
        "/q/control/rcpthosts: is missing: qmail-smtpd accepts mail for every domain (an open "
        "relay) (create it with the domains this host receives mail for)"
    )
    given = inputs(rcpthosts=None, ctime=START + 5)
    assert hup.decide(given, None, None).errors == (error,)
    assert hup.decide(given, HOLDER, None).errors == (error,)
    assert hup.decide(given, HOLDER, None, force=True).errors == (error,)


# -- the record --------------------------------------------------------------------


def test_record_round_trip_and_corrupt_records(tmp_path):
    state = tmp_path / "state"
    rec = Record(5, 6, "ab" * 32, ("a.example",), 1.5, "hup")
    hup.save_record(state, rec)
    assert oct((state / "hup.json").stat().st_mode & 0o777) == "0o600"
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert hup.load_record(state) == rec
    data = json.loads((state / "hup.json").read_text())
    for broken in (b"{", b"[]", b'{"version": 1}', json.dumps({**data, "version": 2}).encode()):
        (state / "hup.json").write_bytes(broken)
        assert hup.load_record(state) is None
    (state / "hup.json").unlink()
    assert hup.load_record(state) is None


# -- run() against the stand-in ----------------------------------------------------------


class Direct:
    """The stand-in started directly, its stdout read line by line."""

    def __init__(self, tmp_path):
        self.home = make_home(tmp_path / "qmail")
        self.state = tmp_path / "state"
        program = qmail_send.install(tmp_path / "bin")
        self.proc = subprocess.Popen([program, str(self.home)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().startswith("status: starting")
        assert self.proc.stdout.readline().startswith("status: started")

    def line(self) -> str:
        return self.proc.stdout.readline()

    def stop(self) -> list[str]:
        self.proc.terminate()
        out = self.proc.stdout.read().splitlines()
        self.proc.wait(5)
        return out


def test_run_sends_records_then_not_needed(tmp_path):
    site = Direct(tmp_path)
    try:
        locals_path = site.home / "control" / "locals"
        # started after the files were written: at most START_MARGIN doubt, then a HUP
        first = hup.run(site.home, site.state)
        assert isinstance(first, (Sent, NotNeeded))
        if isinstance(first, Sent):
            assert site.line() == "status: got HUP; locals=2 virtualdomains=1\n"
        record = hup.load_record(site.state)
        assert record is not None and record.pid == site.proc.pid
        assert record.locals == ("example.com", "example.net")
        locals_path.write_bytes(b"example.com\nexample.net\nexample.org\n")
        assert hup.run(site.home, site.state, dry_run=True) == Send(
            hup.send.holder(site.home), "locals/virtualdomains changed since its " + record.event
        )
        result = hup.run(site.home, site.state)
        assert str(result) == (
            f"hup qmail-send pid {site.proc.pid}: locals/virtualdomains changed since its "
            f"{record.event}"
        )
        assert site.line() == "status: got HUP; locals=3 virtualdomains=1\n"
        assert hup.load_record(site.state).event == "hup"
        # comment-only edit, even with rsync -a's old mtime: nothing
        locals_path.write_bytes(b"# edited\nexample.com\n\nexample.net  \nexample.org\n")
        os.utime(locals_path, (1_000_000_000, 1_000_000_000))
        assert hup.run(site.home, site.state) == NotNeeded(
            f"qmail-send pid {site.proc.pid} already has this content"
        )
        # a real change with an old mtime is seen
        locals_path.write_bytes(b"example.com\nexample.net\n")
        os.utime(locals_path, (1_000_000_000, 1_000_000_000))
        assert isinstance(hup.run(site.home, site.state), Sent)
        assert site.line() == "status: got HUP; locals=2 virtualdomains=1\n"
        # refused: empty locals, exit state unchanged, no signal
        locals_path.write_bytes(b"\n")
        refused = hup.run(site.home, site.state)
        assert isinstance(refused, Refused) and refused.overridable
        forced = hup.run(site.home, site.state, force=True)
        assert isinstance(forced, Sent) and str(forced).endswith(
            "; forced past: "
            f"{locals_path}: is empty: qmail-send would treat no domain as local and bounce all "
            "local mail (check the file, then run again with --force)"
        )
        assert site.line() == "status: got HUP; locals=0 virtualdomains=1\n"
    finally:
        rest = site.stop()
    assert rest == ["status: got TERM", "status: exiting"]


def test_run_with_another_lock_holder_sends_nothing(tmp_path):
    home = make_home(tmp_path / "qmail")
    proc = other_holder(home / SENDMUTEX)
    try:
        result = hup.run(home, tmp_path / "state")
        assert isinstance(result, NotNeeded)
        assert str(result).startswith(f"no hup: the lock is held by pid {proc.pid} (")
        assert proc.poll() is None
        assert not (tmp_path / "state").exists()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("kind", KINDS)
def test_run_under_supervisor_hups_within_a_second_and_not_when_down(tmp_path, scan, kind):
    site = SendSite(tmp_path, kind)
    site.start(scan)
    state = tmp_path / "state"
    hup.run(site.home, state)  # the baseline for this qmail-send
    seen = len(site.lines())
    (site.home / "control" / "virtualdomains").write_bytes(b"v.example:alice\nw.example:bob\n")
    began = time.monotonic()
    result = hup.run(site.home, state)
    site.wait_line("status: got HUP; locals=2 virtualdomains=2", seen, timeout=1.0)
    assert time.monotonic() - began < 1.0
    assert isinstance(result, Sent) and result.pid == site.pid()
    site.suite.down(site.service)
    wait_for(lambda: not site.suite.status(site.service).up, 10, what="qmail-send down")
    (site.home / "control" / "virtualdomains").write_bytes(b"v.example:alice\n")
    assert hup.run(site.home, state) == NotNeeded(
        "qmail-send is not running; it reads the files when it starts"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_restart_loop_with_hups_never_kills_the_standin(tmp_path, scan, kind):
    """svc -t again and again, files changing, run() in between: no HUP in a start window.

    The stand-in waits 0.3 s before its handlers, so a HUP to the supervised
    pid while it starts (as svc -h or kill by name would send) would kill it.
    """
    site = SendSite(tmp_path, kind, delay=0.3)
    site.start(scan)
    state = tmp_path / "state"
    locals_path = site.home / "control" / "locals"
    sent = 0
    for cycle in range(4):
        old = site.pid()
        site.suite.term(site.service)
        locals_path.write_bytes(b"".join(b"d%d.example\n" % i for i in range(cycle + 3)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            result = hup.run(site.home, state)
            if isinstance(result, Sent) and result.pid != old:
                sent += 1
                break
            assert isinstance(result, (Sent, NotNeeded)), result
    assert sent == 4
    runs = site.runs()
    assert len(runs) == 5
    for lines in runs[:-1]:
        assert lines[1].startswith("status: started pid ")
        # a HUP may meet the TERM in one batch: logged, then the exit
        assert lines[-1] == "status: exiting" and "status: got TERM" in lines
    assert runs[-1][1] == f"status: started pid {site.pid()}; locals=6 virtualdomains=1"
