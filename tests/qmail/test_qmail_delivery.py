"""qmail's delivery rules over one snapshot, and the keys of one domain alone (Plan.domain_keys)."""

from __future__ import annotations

import pytest
from support.rcpt import Tree

from qmailkit.errors import InputError
from qmailkit.qmail import recipients
from qmailkit.qmail.delivery import Route, RouteKind, Rules
from qmailkit.qmail.recipients import Options


@pytest.fixture
def tree(tmp_path) -> Tree:
    t = Tree(tmp_path / "t")
    t.ctl("rcpthosts", "example.com", "good.example", "bad.example", "relay.example")
    t.ctl("locals", "example.com")
    t.ctl(
        "virtualdomains",
        "good.example:good.example",
        "bad.example:bad.example",
        "boss@good.example:good.example",
    )
    t.ctl("smtproutes", "relay.example:mx.relay.example")
    t.user("bob", 1000, {".qmail-lists": "./Maildir/\n"})
    t.alias_file(".qmail-postmaster")
    t.vdomain("good.example", ["anna", "bert"])
    t.vdomain("bad.example", ["carl"])
    t.write_assign()
    return t


def options(t: Tree) -> Options:
    return Options(qmail_home=t.qmail, passwd=t.passwd, vpopmail_home=t.vpopmail)


def test_routes_as_qmail_send_reads_them(tree):
    snapshot = options(tree).snapshot()
    control = tree.control
    assert snapshot.route("example.com", "x") == (
        Route(RouteKind.LOCAL, str(control / "locals")),
        [],
    )
    assert snapshot.route("good.example", "x") == (Route(RouteKind.VIRTUAL, "good.example"), [])
    assert snapshot.route("relay.example", "x") == (
        Route(RouteKind.RELAY, f"{control}/smtproutes:1"),
        [],
    )
    assert snapshot.route("stray.example", "rcpthosts:9") == (
        None,
        [
            f"stray.example (rcpthosts:9) is accepted but nothing handles it: it is not in "
            f"{control}/locals, {control}/virtualdomains or {control}/smtproutes"
        ],
    )


def test_who_delivers_a_local_name(tree):
    snapshot = options(tree).snapshot()
    domain_dir = str(tree.vpopmail / "domains" / "good.example")
    # users/cdb's +good.example- entry first, with the rest of the name as the extension
    assert snapshot.deliverer("good.example-anna") == (domain_dir, "-", "anna")
    # then qmail-getpw: the longest account name up to a dash
    home = str(tree.root / "home" / "bob")
    assert snapshot.deliverer("bob") == (home, "", "")
    assert snapshot.deliverer("bob-lists-x") == (home, "-", "lists-x")
    # else the alias user
    assert snapshot.deliverer("nobody") == (str(tree.alias), "-", "nobody")
    assert snapshot.resolve_prefix("bob-") == (home, "-", "", "user bob")
    assert snapshot.qmail_file(home, "-", "lists") == f"{home}/.qmail-lists"
    assert snapshot.qmail_file(home, "-", "other") is None


def test_a_snapshot_reads_each_file_once(tree):
    snapshot = options(tree).snapshot()
    assert set(snapshot.received) == {
        "example.com",
        "good.example",
        "bad.example",
        "relay.example",
    }
    home = str(tree.root / "home" / "bob")
    assert snapshot.qmail_file(home, "-", "new") is None
    tree.ctl("rcpthosts", "other.example")
    tree.write(tree.root / "home" / "bob" / ".qmail-new", "./Maildir/\n")
    assert "other.example" not in snapshot.received  # what it read first
    assert snapshot.qmail_file(home, "-", "new") is None
    fresh = options(tree).snapshot()
    assert set(fresh.received) == {"other.example"}
    assert fresh.qmail_file(home, "-", "new") == f"{home}/.qmail-new"


def test_rules_note_what_qmail_local_would_not_find(tree):
    notes: list[str] = []
    rules = Rules(options(tree).snapshot(), notes)
    home = str(tree.root / "home" / "bob")
    assert rules.verdict(home, "-", "gone", "users/assign:3", "gone@example.com") == b"-"
    assert notes == [
        f"users/assign:3: gone@example.com rejected: qmail-local finds neither "
        f"{home}/.qmail-gone nor a -default file for it"
    ]


def test_one_domain_alone_without_reading_the_others(tree):
    """The updater's call: one domain's keys, while another domain's vpasswd is broken."""
    whole = recipients.build(options(tree))
    bad_vpasswd = tree.vpopmail / "domains" / "bad.example" / "vpasswd"
    bad_vpasswd.write_text("broken line\n")
    with pytest.raises(InputError):
        recipients.build(options(tree))
    work = recipients.plan(options(tree))
    found, notes = work.domain_keys("good.example")
    assert found.keys == [b"anna@good.example", b"bert@good.example", b"boss@good.example"]
    assert list(found.origins()) == list(whole.domains[b"good.example"].origins())
    assert notes == []
    local, local_notes = work.domain_keys("example.com")
    assert (
        local.keys
        == whole.domains[b"example.com"].keys
        == [
            b"bob-lists@example.com",
            b"bob@example.com",
            b"postmaster@example.com",
        ]
    )
    assert local_notes == []
    relayed, relay_notes = work.domain_keys("relay.example")
    assert relayed.keys == [b"@relay.example"]
    assert relay_notes == [
        f"relay.example is relayed ({tree.control}/smtproutes:1) and has no mailbox list: "
        "every address is accepted"
    ]
    with pytest.raises(InputError) as caught:
        work.domain_keys("bad.example")
    assert caught.value.path == str(bad_vpasswd)
