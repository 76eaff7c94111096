"""The validrcptto keys (qmail.recipients): every source of valid recipients, exact key sets."""

from __future__ import annotations

import os

import pytest
from support.rcpt import VDELIVER_CATCHALL, Tree

from qmailkit import cdb
from qmailkit.errors import InputError, QmailkitError
from qmailkit.qmail.recipients import Options, build
from qmailkit.qmail.validrcptto import lookup


def keys(tree: Tree, **kw) -> dict[str, str]:
    """key -> value ('' or '-') of a build of ``tree``."""
    rec = build(
        Options(qmail_home=tree.qmail, passwd=tree.passwd, vpopmail_home=tree.vpopmail, **kw)
    )
    return {k.decode(): v.decode() for k, v in rec.records()}


@pytest.fixture
def tree(tmp_path) -> Tree:
    return Tree(tmp_path)


def local_tree(tree: Tree) -> Tree:
    tree.ctl("rcpthosts", "example.com")
    tree.ctl("locals", "example.com")
    return tree


# -- local domains: system accounts ---------------------------------------------------------


def test_system_users_in_the_uid_window(tree):
    local_tree(tree)
    tree.user("low", 499)
    tree.user("first", 500)
    tree.user("last", 65000)
    tree.user("high", 65001)
    tree.user("toor", 0)
    tree.user("skipme", 1234)
    tree.user("Capital", 1235)  # qmail-getpw never delivers to a name with capitals
    assert keys(tree, uid_ignore=frozenset({1234})) == {
        "first@example.com": "",
        "last@example.com": "",
    }
    assert "low@example.com" in keys(tree, uid_min=100)
    assert "toor@example.com" not in keys(tree, uid_min=0)


def test_system_user_dot_qmail_extensions(tree):
    local_tree(tree)
    tree.user(
        "bob",
        1000,
        {
            ".qmail": "./Maildir/\n",
            ".qmail-lists": "./Maildir/.lists/\n",
            ".qmail-www:example:org": "./Maildir/\n",  # ':' stands for '.'
            ".qmail-news-default": "./Maildir/\n",
            ".qmail-spam": "|bouncesaying 'no spam here'\n",
            ".qmail-old": "# gone\n|exit 100\n",
            ".qmail-cond": "|bouncesaying 'not you' condredirect x\n",  # conditional: delivers
            ".qmail-Upper": "./Maildir/\n",  # qmail-local looks for lower-case names only
            ".qmailrc": "not a dot-qmail file\n",
        },
    )
    # qmail-local writes "." as ":" before it looks: every mix of the two reaches the file.
    dotted = {f"bob-www{a}example{b}org@example.com": "" for a in ".:" for b in ".:"}
    assert keys(tree) == dotted | {
        "bob@example.com": "",
        "bob-lists@example.com": "",
        "bob-news-default@example.com": "",
        "bob-spam@example.com": "-",
        "bob-old@example.com": "-",
        "bob-cond@example.com": "",
    }


def test_user_default_and_bouncing_dot_qmail(tree):
    local_tree(tree)
    tree.user("carl", 1001, {".qmail-default": "./Maildir/\n"})
    tree.user("dora", 1002, {".qmail": "|bouncesaying 'left the company'\n"})
    assert keys(tree) == {
        "carl@example.com": "",
        "carl-default@example.com": "",
        "dora@example.com": "-",
    }


def test_defaultdelivery_decides_users_without_dot_qmail(tree):
    local_tree(tree)
    tree.user("eve", 1003)
    tree.user("fay", 1004, {".qmail": "./Maildir/\n"})
    tree.ctl("defaultdelivery", "|bouncesaying 'no local delivery here'")
    assert keys(tree) == {"eve@example.com": "-", "fay@example.com": ""}


def test_user_without_home_is_skipped_with_a_warning(tree):
    local_tree(tree)
    tree.user("gone", 1005, make_home=False)
    tree.user("here", 1006)
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert [k for k, _ in rec.records()] == [b"here@example.com"]
    assert any("user gone skipped" in w and "does not exist" in w for w in rec.warnings)


def test_malformed_passwd_names_the_line(tree):
    local_tree(tree)
    tree.accounts.append("broken:x:12ab:1::/h:/bin/sh")
    tree.write_passwd()
    with pytest.raises(InputError) as err:
        keys(tree)
    assert str(err.value) == f"{tree.passwd}:4: uid '12ab' is not a number"


def test_me_is_the_local_domain_without_locals(tree):
    tree.ctl("rcpthosts", "mail.example.com")
    tree.ctl("me", "mail.example.com")
    tree.user("bob", 1000)
    assert keys(tree) == {"bob@mail.example.com": ""}


# -- the alias user and fastforward ----------------------------------------------------------


def test_alias_files_and_fastforward(tree):
    tree.ctl("rcpthosts", "example.com", "example.net")
    tree.ctl("locals", "example.com", "example.net")
    tree.user("bob", 1000)
    tree.alias_file(".qmail-postmaster")
    tree.alias_file(".qmail-mailer-daemon")
    tree.alias_file(".qmail-www:admin")
    tree.alias_file(".qmail-noreply", "|bouncesaying 'do not reply'\n")
    db = tree.setforward(
        "info@example.com: bob@example.com;\n"
        "Sales@: bob@example.com;\n"
        "other@elsewhere.org: bob@example.com;\n"
    )
    tree.alias_file(".qmail-default", f"| fastforward -d {db}\n")
    common = {
        "bob": "",
        "postmaster": "",
        "mailer-daemon": "",
        "www.admin": "",
        "www:admin": "",
        "noreply": "-",
        "sales": "",
    }
    want = {f"{k}@example.com": v for k, v in common.items()}
    want |= {f"{k}@example.net": v for k, v in common.items()}
    want["info@example.com"] = ""
    assert keys(tree) == want
    # -n leaves the alias user out
    assert keys(tree, skip_alias=True) == {"bob@example.com": "", "bob@example.net": ""}


def test_fastforward_domain_catch_all_and_relative_cdb(tree):
    local_tree(tree)
    tree.setforward("@example.com: someone@example.org;\n", name="var-qmail/alias/fwd.cdb")
    tree.alias_file(".qmail-default", "|fastforward -d fwd.cdb\n")
    assert keys(tree) == {"@example.com": ""}


def test_alias_default_that_is_not_fastforward_is_a_catch_all(tree):
    local_tree(tree)
    tree.alias_file(".qmail-default", "&catchall@example.org\n")
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert {k: v for k, v in rec.records()} == {b"@example.com": b""}
    assert any("catch-all" in w for w in rec.warnings)


def test_missing_fastforward_cdb_is_an_error(tree):
    local_tree(tree)
    tree.alias_file(".qmail-default", "| fastforward -d /nonexistent/aliases.cdb\n")
    with pytest.raises(QmailkitError, match="fastforward database named in .*is missing"):
        keys(tree)


def test_alias_domain_from_virtualdomains(tree):
    tree.ctl("rcpthosts", "virt.example")
    tree.ctl("virtualdomains", "virt.example:alias")
    tree.alias_file(".qmail-postmaster")
    db = tree.setforward("billing@virt.example: joe@example.org;\n")
    tree.alias_file(".qmail-default", f"| fastforward -d {db}\n")
    assert keys(tree) == {"postmaster@virt.example": "", "billing@virt.example": ""}


# -- users/assign ------------------------------------------------------------------------------


def test_users_cdb_entries_win_over_system_users(tree):
    local_tree(tree)
    other = tree.root / "other"
    other.mkdir()
    (other / ".qmail-ext").write_text("./Maildir/\n")
    tree.user("bob", 1000, {".qmail-mine": "./Maildir/\n"})
    tree.user("carl", 1001, {".qmail-mine": "./Maildir/\n"})
    tree.assign_lines += [
        f"=bob:x:2000:2000:{other}:::",  # only "bob" itself
        f"+carl-:x:2000:2000:{other}:-::",
    ]  # every carl-EXT
    tree.write_assign()
    assert keys(tree) == {
        "bob@example.com": "",
        "bob-mine@example.com": "",
        "carl@example.com": "",
        "carl-ext@example.com": "",
    }


def test_users_assign_without_cdb_is_used_with_a_warning(tree):
    local_tree(tree)
    tree.assign_lines.append(f"=joe:x:2000:2000:{tree.root}:-::")
    tree.write_assign(compile_cdb=False)
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert [k for k, _ in rec.records()] == [b"joe@example.com"]
    assert any("qmail-newu" in w for w in rec.warnings)


# -- virtual domains and vpopmail -------------------------------------------------------------


def vpop_tree(tree: Tree) -> Tree:
    tree.ctl("rcpthosts", "bounce.example", "catch.example")
    tree.ctl("virtualdomains", "bounce.example:bounce.example", "catch.example:catch.example")
    tree.vdomain(
        "bounce.example",
        ["alice", "Bob"],
        files={
            ".qmail-sales": "&alice@bounce.example\n",
            ".qmail-list": "|ezmlm-send '/home/vpopmail/domains/bounce.example/list'\n",
            ".qmail-list-default": "|ezmlm-manage '/home/vpopmail/domains/bounce.example/list'\n",
            ".qmail-gone": "|bouncesaying 'gone fishing'\n",
            ".qmail-bob": "&alice@bounce.example\n",  # an alias for an existing mailbox
        },
    )
    tree.vdomain("catch.example", ["carol"], default=VDELIVER_CATCHALL)
    tree.write_assign()
    return tree


VPOP_KEYS = {
    "alice@bounce.example": "",
    "bob@bounce.example": "",
    "sales@bounce.example": "",
    "list@bounce.example": "",
    "list-default@bounce.example": "",
    "gone@bounce.example": "-",
    "@catch.example": "",
}


def test_vpopmail_bounce_no_mailbox_lists_mailboxes_catch_all_gives_domain(tree):
    vpop_tree(tree)
    assert keys(tree) == VPOP_KEYS


def test_vpopmail_ezmlm_list_addresses_are_accepted(tree):
    vpop_tree(tree)
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd, vpopmail_home=tree.vpopmail))
    for address in ("list-subscribe@bounce.example", "list-return-42-a=b.c@bounce.example"):
        assert lookup(address, rec.get).key == b"list-default@bounce.example"
    assert not lookup("gone@bounce.example", rec.get).accept
    assert not lookup("nobody@bounce.example", rec.get).accept


def test_vpopmail_qmail_ext_from_config_header_or_option(tree):
    vpop_tree(tree)
    ext = {"alice-default@bounce.example": ""}  # not the mailbox "Bob" (see below)
    assert keys(tree, qmail_ext=True) == VPOP_KEYS | ext
    header = tree.vpopmail / "include" / "vpopmail_config.h"
    tree.write(header, "/* vpopmail */\n#define QMAIL_EXT 1\n")
    assert keys(tree) == VPOP_KEYS | ext
    assert keys(tree, qmail_ext=False) == VPOP_KEYS
    tree.write(header, "/* #define QMAIL_EXT 1 */\n")
    assert keys(tree) == VPOP_KEYS


def test_vpopmail_vpasswd_cdb_when_no_text_file(tree):
    tree.ctl("rcpthosts", "cdb.example")
    tree.ctl("virtualdomains", "cdb.example:cdb.example")
    ddir = tree.vdomain("cdb.example", [], vpasswd=False)
    cdb.write(
        ddir / "vpasswd.cdb",
        [(b"zed", b"h:1:0::/d/zed:NOQUOTA"), (b"Yves", b"h:1:0::/d/yves:NOQUOTA")],
    )
    tree.write_assign()
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd, vpopmail_home=tree.vpopmail))
    assert dict(rec.records()) == {b"zed@cdb.example": b""}
    assert rec.warnings == [
        (
            f"{ddir}/vpasswd.cdb: mailbox 'Yves' skipped: vdelivermail looks up the lower-cased "
            "address, so a name with capitals never gets mail"
        )
    ]


def test_vpopmail_sql_backend_asks_vuserinfo_and_valias(tree):
    tree.ctl("rcpthosts", "sql.example")
    tree.ctl("virtualdomains", "sql.example:sql.example")
    tree.vdomain("sql.example", [], vpasswd=False)
    tree.write_assign()
    bindir = tree.vpopmail / "bin"
    # vpopmail is not packaged for Debian; these stand in for its two programs' output.
    tree.write(
        bindir / "vuserinfo",
        '#!/bin/sh\n[ "$1 $2" = "-D sql.example" ] || exit 1\n'
        'printf "name: Amy\\npasswd: x\\nname: ben\\n"\n',
    )
    tree.write(
        bindir / "valias",
        '#!/bin/sh\n[ "$1 $2" = "-s sql.example" ] || exit 1\n'
        'echo "info@sql.example -> &amy@sql.example"\n',
    )
    os.chmod(bindir / "vuserinfo", 0o755)
    os.chmod(bindir / "valias", 0o755)
    assert keys(tree) == {"amy@sql.example": "", "ben@sql.example": "", "info@sql.example": ""}
    os.chmod(bindir / "valias", 0o644)
    (bindir / "valias").write_text("#!/bin/sh\necho 'valias: db down' >&2\nexit 3\n")
    os.chmod(bindir / "valias", 0o755)
    with pytest.raises(
        QmailkitError, match="valias -s sql.example failed with exit code 3: valias: db down"
    ):
        keys(tree)


def test_malformed_vpasswd_names_file_and_line(tree):
    vpop_tree(tree)
    vpasswd = tree.vpopmail / "domains" / "bounce.example" / "vpasswd"
    vpasswd.write_text("alice:x:1:0::/d:NOQUOTA\nbroken-line\n")
    with pytest.raises(InputError) as err:
        keys(tree)
    assert str(err.value).startswith(f"{vpasswd}:2: malformed vpasswd line")


def test_virtual_domain_delivered_by_a_system_user(tree):
    tree.ctl("rcpthosts", "joe.example")
    tree.ctl("virtualdomains", "joe.example:joe-web")
    tree.user(
        "joe",
        1000,
        {
            ".qmail-web-info": "./Maildir/\n",
            ".qmail-web-list-default": "x\n",
            ".qmail-other": "./Maildir/\n",
        },
    )
    assert keys(tree) == {"info@joe.example": "", "list-default@joe.example": ""}


def test_virtualdomains_single_addresses_and_wildcards(tree):
    tree.ctl("rcpthosts", "one.example", "sub.wild.example")
    tree.ctl("virtualdomains", "Boss@one.example:joe", ".wild.example:wild", "one.example:one")
    tree.user("joe", 1000, {".qmail-boss": "./Maildir/\n"})  # Boss@one.example is joe-boss
    tree.alias_file(".qmail-one-info")
    tree.alias_file(".qmail-wild-info")
    assert keys(tree) == {
        "boss@one.example": "",
        "info@one.example": "",
        "info@sub.wild.example": "",
    }


# -- relayed domains ----------------------------------------------------------------------------


def test_smtproutes_domains_with_and_without_a_list(tree):
    tree.ctl("rcpthosts", "listed.example", "open.example")
    tree.ctl(
        "smtproutes", ":smarthost.example", "listed.example:10.0.0.2", "open.example:10.0.0.3:2525"
    )
    routes = tree.root / "routes"
    tree.write(
        routes / "listed.example",
        "# mailboxes behind the gateway\nAnn\nbo@listed.example  # trailing comment\n\n",
    )
    assert keys(tree, smtproutes_dir=routes) == {
        "ann@listed.example": "",
        "bo@listed.example": "",
        "@open.example": "",
    }


# -- domains, safety, sources --------------------------------------------------------------------


def test_morercpthosts_cdb_domains_count(tree):
    tree.ctl("rcpthosts", "example.com")
    tree.ctl("locals", "example.com", "more.example")
    cdb.write(tree.control / "morercpthosts.cdb", [(b"more.example", b"")])
    tree.user("bob", 1000)
    assert keys(tree) == {"bob@example.com": "", "bob@more.example": ""}


def test_unhandled_domain_is_an_error_naming_domain_and_files(tree):
    tree.ctl("rcpthosts", "example.com", "Forgotten.example")
    tree.ctl("locals", "example.com")
    with pytest.raises(InputError) as err:
        keys(tree)
    text = str(err.value)
    assert "forgotten.example" in text and "is accepted but nothing handles it" in text
    assert f"{tree.control}/rcpthosts:2" in text
    assert f"{tree.control}/locals" in text and f"{tree.control}/virtualdomains" in text
    assert err.value.exit_code == 100


def test_domain_in_locals_and_virtualdomains_is_an_error(tree):
    tree.ctl("rcpthosts", "example.com")
    tree.ctl("locals", "example.com")
    tree.ctl("virtualdomains", "# comment", "example.com:example.com")
    with pytest.raises(
        InputError,
        match=r"example.com is in both .*/control/locals and "
        r".*/control/virtualdomains:2",
    ):
        keys(tree)


def test_domain_in_smtproutes_and_delivered_here_is_an_error(tree):
    tree.ctl("rcpthosts", "example.com")
    tree.ctl("locals", "example.com")
    tree.ctl("smtproutes", "example.com:10.1.1.1")
    with pytest.raises(
        InputError,
        match=r"example.com is in both .*/control/locals and "
        r".*/control/smtproutes:1",
    ):
        keys(tree)


def test_wildcard_rcpthosts_entry_is_an_error(tree):
    tree.ctl("rcpthosts", ".example.com")
    tree.ctl("virtualdomains", ".example.com:x")
    with pytest.raises(InputError, match=r"\.example\.com .* is a wildcard entry"):
        keys(tree)


def test_missing_rcpthosts_is_an_error(tree):
    with pytest.raises(InputError, match="control/rcpthosts is missing"):
        keys(tree)


def test_virtualdomains_line_without_colon(tree):
    tree.ctl("rcpthosts", "example.com")
    tree.ctl("virtualdomains", "example.com")
    with pytest.raises(InputError) as err:
        keys(tree)
    assert str(err.value).startswith(f"{tree.control}/virtualdomains:1: no ':' in")


def test_missing_virtual_domain_directory_is_an_error(tree):
    tree.ctl("rcpthosts", "lost.example")
    tree.ctl("virtualdomains", "lost.example:lost.example")
    tree.assign_lines.append(f"+lost.example-:lost.example:89:89:{tree.root}/nowhere:-::")
    tree.write_assign()
    with pytest.raises(QmailkitError, match="nowhere: home directory does not exist"):
        keys(tree)


def test_everything_lower_cased_and_once_with_sources(tree):
    tree.ctl("rcpthosts", "EXAMPLE.com", "example.com")
    tree.ctl("locals", "Example.COM")
    tree.user("bob", 1000)
    tree.alias_file(".qmail-bob")  # same key as the system user: the user wins
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert list(rec.explain()) == [(b"bob@example.com", b"", f"{tree.passwd}:4")]


def test_exclude(tree):
    vpop_tree(tree)
    got = keys(tree, exclude=frozenset({"Sales@Bounce.example", "@catch.example"}))
    assert got == {
        k: v for k, v in VPOP_KEYS.items() if k not in ("sales@bounce.example", "@catch.example")
    }


def test_full_tree_exact_key_set(tree):
    """The demo's kind of tree: everything at once."""
    tree.ctl("rcpthosts", "example.com", "bounce.example", "catch.example", "virt.example")
    tree.ctl("locals", "example.com")
    tree.ctl(
        "virtualdomains",
        "bounce.example:bounce.example",
        "catch.example:catch.example",
        "virt.example:alias",
    )
    tree.user("bob", 1000, {".qmail-spam": "|bouncesaying 'no'\n"})
    tree.alias_file(".qmail-postmaster")
    db = tree.setforward("info@example.com: bob@example.com;\nhelp@virt.example: bob;\n")
    tree.alias_file(".qmail-default", f"|fastforward -d {db}\n")
    vpop_tree(tree)
    tree.ctl("rcpthosts", "example.com", "bounce.example", "catch.example", "virt.example")
    tree.ctl(
        "virtualdomains",
        "bounce.example:bounce.example",
        "catch.example:catch.example",
        "virt.example:alias",
    )
    assert keys(tree) == VPOP_KEYS | {
        "bob@example.com": "",
        "bob-spam@example.com": "-",
        "postmaster@example.com": "",
        "info@example.com": "",
        "postmaster@virt.example": "",
        "help@virt.example": "",
    }


# -- more rules ---------------------------------------------------------------------------------


def test_exact_users_assign_name_under_a_virtual_prefix(tree):
    vpop_tree(tree)
    tree.assign_lines.append(f"=bounce.example-special:x:2000:2000:{tree.root}:-:sp:")
    tree.write(tree.root / ".qmail-sp", "./Maildir/\n")
    tree.write_assign()
    assert keys(tree) == VPOP_KEYS | {"special@bounce.example": ""}


def test_users_assign_wildcard_for_a_local_domain(tree):
    local_tree(tree)
    lists = tree.root / "lists"
    tree.write(lists / ".qmail-team", "|ezmlm-send team\n")
    tree.write(lists / ".qmail-team-default", "|ezmlm-manage team\n")
    tree.assign_lines.append(f"+ml-:ml:2000:2000:{lists}:-::")
    tree.write_assign()
    assert keys(tree) == {"ml-team@example.com": "", "ml-team-default@example.com": ""}


def test_vdelivermail_delete_lists_mailboxes(tree):
    tree.ctl("rcpthosts", "quiet.example")
    tree.ctl("virtualdomains", "quiet.example:quiet.example")
    tree.vdomain("quiet.example", ["zoe"], default="|/home/vpopmail/bin/vdelivermail '' delete\n")
    tree.write_assign()
    assert keys(tree) == {"zoe@quiet.example": ""}


def test_fastforward_passthrough_then_mailbox_is_a_catch_all(tree):
    local_tree(tree)
    db = tree.setforward("info@example.com: x@example.org;\n")
    tree.alias_file(".qmail-default", f"|fastforward -p {db}\n./Maildir/\n")
    assert keys(tree) == {"info@example.com": "", "@example.com": ""}
    tree.alias_file(".qmail-default", f"|fastforward -p {db}\n")
    assert keys(tree) == {"info@example.com": ""}


def test_virtualdomains_empty_prepend_exempts_and_wildcard_smtproutes(tree):
    tree.ctl("rcpthosts", "a.relay.example")
    tree.ctl("virtualdomains", ".relay.example:x", "a.relay.example:")
    tree.ctl("smtproutes", ".relay.example:10.0.0.9")
    assert keys(tree) == {"@a.relay.example": ""}


def test_skip_alias_leaves_an_alias_domain_empty_with_a_warning(tree):
    tree.ctl("rcpthosts", "virt.example")
    tree.ctl("virtualdomains", "virt.example:alias")
    tree.alias_file(".qmail-postmaster")
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd, skip_alias=True))
    assert list(rec.records()) == []
    assert any("virt.example: no valid address found" in w for w in rec.warnings)


def test_empty_key_in_morercpthosts_is_an_error(tree):
    tree.ctl("rcpthosts", "example.com")
    tree.ctl("locals", "example.com")
    cdb.write(tree.control / "morercpthosts.cdb", [(b"", b"")])
    with pytest.raises(InputError, match="morercpthosts.cdb holds an empty domain"):
        keys(tree)


def test_users_assign_newer_than_users_cdb_is_warned_about(tree):
    local_tree(tree)
    tree.user("bob", 1000)
    tree.assign_lines.append(f"=joe:x:2000:2000:{tree.root}:-::")
    tree.write_assign()
    os.utime(tree.users / "cdb", (1_000_000_000, 1_000_000_000))
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert any("is newer than" in w and "qmail-newu" in w for w in rec.warnings)
    assert {k for k, _ in rec.records()} == {b"bob@example.com", b"joe@example.com"}


def test_vpopmail_home_defaults_to_the_vpopmail_account(tree):
    vpop_tree(tree)
    tree.write(tree.vpopmail / "include" / "vpopmail_config.h", "#define QMAIL_EXT 1\n")
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))  # no vpopmail_home
    assert b"alice-default@bounce.example" in {k for k, _ in rec.records()}


def test_home_that_is_not_a_directory_names_it(tree):
    tree.ctl("rcpthosts", "odd.example")
    tree.ctl("virtualdomains", "odd.example:odd.example")
    (tree.root / "afile").write_text("")
    tree.assign_lines.append(f"+odd.example-:odd.example:89:89:{tree.root}/afile:-::")
    tree.write_assign()
    with pytest.raises(QmailkitError) as err:
        keys(tree)
    assert str(err.value) == f"{tree.root}/afile: cannot list home directory: Not a directory"
    assert err.value.exit_code == 111


def test_malformed_users_assign_names_the_line(tree):
    local_tree(tree)
    tree.write(tree.users / "assign", "=joe:x:2000:2000:/h:-::\n=bad:x:notanumber:1:/h:-::\n.\n")
    with pytest.raises(InputError) as err:
        keys(tree)
    assert str(err.value) == f"{tree.users}/assign:2: uid 'notanumber' is not a number"


def test_indexed_users_lookup_agrees_with_qmail_assign_lookup(tree):
    from qmailkit.qmail import assign
    from qmailkit.qmail.delivery import AssignIndex

    text = (
        b"=joe:a:1:1:/h:-::\n+jo:b:1:1:/h:-::\n+jo-:c:1:1:/h:-::\n+:d:1:1:/h:-::\n"
        b"+Big.:e:1:1:/h:-::\n=joe:f:1:1:/h:-::\n.\n"
    )
    entries = assign.parse(text, "users/assign")
    index = AssignIndex.of(entries)
    for local in ("joe", "jo", "jo-x", "jox", "john", "", "big.x", "x", "joe-"):
        assert index.lookup(local) == assign.lookup(entries, local), local


# -- qmail-local's rules for an exact users/assign entry (O1) ----------------------------------


def assign_tree(tree: Tree, *lines: str) -> Tree:
    local_tree(tree)
    tree.assign_lines += list(lines)
    tree.write_assign()
    return tree


def test_exact_users_assign_entry_reaches_its_dot_qmail_file(tree):
    """=local:user:uid:gid:home:dash:ext: makes qmail-local read home/.qmail{dash}{ext},
    then each -default down to .qmail{dash}default; with a dash, none is a bounce."""
    home = tree.root / "joe"
    tree.write(home / ".qmail-list", "./Maildir/\n")
    tree.write(home / ".qmail-gone", "|bouncesaying 'gone'\n")
    tree.write(home / ".qmail-a:b", "./Maildir/\n")
    tree.write(home / ".qmail-team-default", "./Maildir/\n")
    assign_tree(
        tree,
        f"=list:joe:2000:2000:{home}:-:list:",
        f"=gone:joe:2000:2000:{home}:-:gone:",
        f"=missing:joe:2000:2000:{home}:-:nothing:",
        f"=dotted:joe:2000:2000:{home}:-:A.b:",  # lower-cased, "." written ":"
        f"=member:joe:2000:2000:{home}:-:team-x:",
    )
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert dict(rec.records()) == {
        b"list@example.com": b"",
        b"gone@example.com": b"-",
        b"missing@example.com": b"-",
        b"dotted@example.com": b"",
        b"member@example.com": b"",
    }
    assert rec.warnings == [
        (
            f"{tree.users}/cdb: missing rejected: qmail-local finds neither {home}/.qmail-nothing "
            "nor a -default file for it"
        )
    ]
    # a .qmail-default takes what nothing else does
    tree.write(home / ".qmail-default", "./Maildir/\n")
    assert keys(tree)["missing@example.com"] == ""


def test_exact_users_assign_entry_without_a_dash_uses_the_default_delivery(tree):
    home = tree.root / "joe"
    home.mkdir()
    assign_tree(tree, f"=joe:joe:2000:2000:{home}:::")
    assert keys(tree) == {"joe@example.com": ""}  # no .qmail: the default delivery
    tree.ctl("defaultdelivery", "|bouncesaying 'no local delivery'")
    assert keys(tree) == {"joe@example.com": "-"}
    tree.write(home / ".qmail", "|bouncesaying 'left'\n")
    tree.ctl("defaultdelivery", "./Maildir/")
    assert keys(tree) == {"joe@example.com": "-"}
    (home / ".qmail").unlink()
    tree.write(home / ".qmaildefault", "./Maildir/\n")  # qmail-local's last try for ""
    tree.ctl("defaultdelivery", "|bouncesaying 'no local delivery'")
    assert keys(tree) == {"joe@example.com": ""}


def test_a_bouncing_exact_entry_is_rejected_in_front_of_a_catch_all(tree):
    assign_tree(tree, f"=joe:joe:2000:2000:{tree.root}/nowhere:-:x:")
    tree.alias_file(".qmail-default", "./Maildir/\n")  # the alias user takes everything
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert dict(rec.records()) == {b"joe@example.com": b"-", b"@example.com": b""}
    assert not lookup("joe@example.com", rec.get).accept
    assert (
        f"{tree.users}/cdb: joe rejected: {tree.root}/nowhere: home directory does not "
        "exist" in rec.warnings
    )


# -- virtualdomains as qmail-send reads it (O2, O3) ----------------------------------------------


def test_single_addresses_for_a_local_domain_are_ignored(tree):
    local_tree(tree)
    tree.user("bob", 1000, {".qmail-spam": "|bouncesaying 'no'\n"})
    tree.ctl("virtualdomains", "bob-spam@example.com:bob", "nobody@example.com:bob")
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert dict(rec.records()) == {b"bob@example.com": b"", b"bob-spam@example.com": b"-"}
    vd = tree.control / "virtualdomains"
    assert rec.warnings == [
        f"{vd}:{n}: {a}:bob is ignored: example.com is in {tree.control}/locals, and "
        "qmail-send does not look at virtualdomains for a local domain"
        for n, a in ((1, "bob-spam@example.com"), (2, "nobody@example.com"))
    ]


def test_a_single_address_is_delivered_by_its_local_name(tree):
    """user@domain:prepend makes the local name prepend-user: whoever owns that decides."""
    tree.ctl("rcpthosts", "v.example")
    tree.ctl(
        "virtualdomains",
        "boss@v.example:joe",
        "ghost@v.example:joe",
        "shut@v.example:joe",
        "v.example:alias",
    )
    tree.user("joe", 1000, {".qmail-boss": "./Maildir/\n", ".qmail-shut": "|exit 100\n"})
    tree.alias_file(".qmail-default", "./Maildir/\n")  # every alias-x@v.example
    assert keys(tree) == {
        "boss@v.example": "",
        "ghost@v.example": "-",
        "shut@v.example": "-",
        "@v.example": "",
    }


def test_the_empty_virtualdomains_entry_catches_every_other_domain(tree):
    tree.ctl("rcpthosts", "a.example", "b.example", "local.example", "out.example")
    tree.ctl("locals", "local.example")
    tree.ctl("virtualdomains", ":catchall", "b.example:bee", "out.example:")
    tree.ctl("smtproutes", "out.example:10.0.0.1")
    tree.user("bob", 1000)
    tree.alias_file(".qmail-catchall-info")
    tree.alias_file(".qmail-bee-x")
    assert keys(tree) == {
        "info@a.example": "",
        "x@b.example": "",
        "@out.example": "",
        # the alias user serves local domains with the same files
        "bob@local.example": "",
        "catchall-info@local.example": "",
        "bee-x@local.example": "",
    }


# -- qmail-getpw's rules for system accounts (Q3) ------------------------------------------------


def test_accounts_qmail_getpw_never_delivers_to_are_left_out(tree):
    local_tree(tree)
    tree.user("owner", 1000)
    qmaild = tree.user("qmaild", 1001)
    os.chown(qmaild, 0, 0)  # like /var/qmail: the account does not own its home
    tree.accounts.append(f"systemd-network:x:998:998::{tree.root}/nonexistent:/usr/sbin/nologin")
    tree.write_passwd()
    long_name = "a" * 32  # qmail-getpw looks up at most 31 characters
    tree.user(long_name, 1002)
    tree.user("a" * 31, 1003)
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert sorted(k for k, _ in rec.records()) == [
        b"a" * 31 + b"@example.com",
        b"owner@example.com",
    ]
    assert rec.warnings == [
        (
            f"{tree.passwd}:5: user qmaild skipped: its home {qmaild} is owned by uid 0, not 1001 "
            "(qmail-getpw delivers only to an account that owns its home)"
        ),
        (
            f"{tree.passwd}:6: user systemd-network skipped: {tree.root}/nonexistent: home "
            "directory does not exist"
        ),
        (
            f"{tree.passwd}:7: user {long_name} skipped: qmail-getpw looks up names of at most 31 "
            "characters"
        ),
    ]


def test_a_virtual_domain_whose_user_does_not_own_its_home_goes_to_the_alias_user(tree):
    tree.ctl("rcpthosts", "v.example")
    tree.ctl("virtualdomains", "v.example:qmaild-v")
    home = tree.user("qmaild", 1001, {".qmail-v-info": "./Maildir/\n"})
    tree.alias_file(".qmail-qmaild-v-sales")  # where qmail-getpw's miss sends it
    assert keys(tree) == {"info@v.example": ""}
    os.chown(home, 0, 0)
    assert keys(tree) == {"sales@v.example": ""}


# -- qmail-local's spelling of an extension (Q4) -------------------------------------------------


def test_dot_and_colon_both_reach_a_dot_qmail_name_with_a_colon(tree):
    local_tree(tree)
    tree.user(
        "alice",
        1000,
        {
            ".qmail-dot:ted": "./Maildir/\n",
            ".qmail-www:x-default": "./Maildir/\n",
            ".qmail-a:b:c:d:e:f:g:h": "./Maildir/\n",
        },
    )  # 7 colons: 2**7?
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    got = {k.decode() for k, _ in rec.records()}
    assert got == {
        "alice@example.com",
        "alice-dot.ted@example.com",
        "alice-dot:ted@example.com",
        "alice-www.x-default@example.com",
        "alice-www:x-default@example.com",
        "alice-a.b.c.d.e.f.g.h@example.com",
        "alice-a:b:c:d:e:f:g:h@example.com",
    }
    for address in (
        "alice-dot:ted@example.com",
        "Alice-Dot.Ted@example.com",
        "alice-www:x-y@example.com",
        "alice-www.x-y@example.com",
    ):
        assert lookup(address, rec.get).accept, address
    assert rec.warnings == [
        (
            f"{tree.root}/home/alice/.qmail-a:b:c:d:e:f:g:h: 7 colons: only the "
            "spellings with all '.' and all ':' are listed"
        )
    ]


# -- names no address reaches, files qmail-local cannot read (A6, A7) ----------------------------


def test_a_newline_in_a_dot_qmail_name_is_skipped_not_split(tree):
    """The finding's reproduction: bob's .qmail-x<LF>postmaster2 made keys 'bob-x' and
    'postmaster2@example.com' (and crashed -c where a domain had '-' values)."""
    local_tree(tree)
    home = tree.user(
        "bob",
        1000,
        {".qmail-spam": "|bouncesaying 'no'\n", ".qmail-x\npostmaster2": "./Maildir/\n"},
    )
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert dict(rec.records()) == {b"bob@example.com": b"", b"bob-spam@example.com": b"-"}
    assert rec.warnings == [
        (
            f"{home}/'.qmail-x\\npostmaster2': skipped: no address reaches a "
            ".qmail name holding a newline"
        )
    ]


def test_a_newline_or_nul_in_a_cdb_key_is_skipped(tree):
    """A vpasswd.cdb key evil<LF>root gave the keys 'evil' and 'root@bounce.example'."""
    vpop_tree(tree)
    tree.ctl("rcpthosts", "bounce.example", "catch.example", "example.com")
    tree.ctl("locals", "example.com")
    ddir = tree.vpopmail / "domains" / "bounce.example"
    (ddir / "vpasswd").unlink()
    cdb.write(
        ddir / "vpasswd.cdb",
        [
            (b"evil\nroot", b"x:1:0::/d:NOQUOTA"),
            (b"nul\0x", b"x:1:0::/d:NOQUOTA"),
            (b"alice", b"x:1:0::/d:NOQUOTA"),
        ],
    )
    from qmailkit.qmail import assign

    records = list(
        assign.records(
            assign.parse("".join(line + "\n" for line in tree.assign_lines).encode() + b".\n")
        )
    )
    value = b"\0".join([b"x", b"2000", b"2000", str(tree.root).encode(), b"", b""])
    cdb.write(tree.users / "cdb", [(b"!odd\nroot\0", value), *records])
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd, vpopmail_home=tree.vpopmail))
    got = {k.decode(): v.decode() for k, v in rec.records()}
    assert got == VPOP_KEYS  # bob@ comes from .qmail-bob
    assert [w for w in rec.warnings if "skipped" in w] == [
        f"{ddir}/vpasswd.cdb: mailbox {name!r} skipped: no address holds a newline or NUL"
        for name in ("evil\nroot", "nul\0x")
    ] + [f"{tree.users}/cdb: skipped 'odd\\nroot@example.com': no address holds a newline or NUL"]


def test_a_users_cdb_wildcard_holding_a_newline_adds_no_key(tree):
    """Names that are whole keys' leads: a users/cdb wildcard +odd<LF>x- on a home with
    .qmail-foo and .qmail-spam (a '-' value) gave 'odd' and 'x-foo@example.com'."""
    local_tree(tree)
    home = tree.root / "odd"
    tree.write(home / ".qmail-foo", "./Maildir/\n")
    tree.write(home / ".qmail-spam", "|bouncesaying 'no'\n")
    value = b"\0".join([b"odd", b"2000", b"2000", str(home).encode(), b"-", b""])
    cdb.write(tree.users / "cdb", [(b"!odd\nx-", value), (b"", b"-")])
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert dict(rec.records()) == {}
    assert rec.domains[b"example.com"].joined_keys() == b""
    assert [w for w in rec.warnings if "newline" in w] == [
        f"{home}/.qmail-{ext}: skipped 'odd\\nx-{ext}@example.com': no address holds a "
        "newline or NUL"
        for ext in ("foo", "spam")
    ]


@pytest.mark.parametrize(
    "where",
    [
        "home/bob/.qmail-fifo",
        "home/bob/.qmail",
        "var-qmail/alias/.qmail-default",
        "home-vpopmail/domains/bounce.example/.qmail-gone",
    ],
)
def test_a_fifo_where_qmail_local_looks_is_skipped_like_qmail_local_does(tree, where):
    vpop_tree(tree)
    tree.ctl("rcpthosts", "example.com", "bounce.example", "catch.example")
    tree.ctl("locals", "example.com")
    tree.user("bob", 1000)
    path = tree.root / where
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd, vpopmail_home=tree.vpopmail))
    got = {k.decode(): v.decode() for k, v in rec.records()}
    assert got == {
        k: v
        for k, v in (VPOP_KEYS | {"bob@example.com": ""}).items()
        if not where.endswith(".qmail-gone") or k != "gone@bounce.example"
    }
    assert (
        f"{path}: skipped: it is a FIFO, not a regular file, so qmail-local ignores it"
        in rec.warnings
    )


@pytest.mark.parametrize(
    "where",
    [
        "var-qmail/control/rcpthosts",
        "var-qmail/control/locals",
        "var-qmail/control/virtualdomains",
        "var-qmail/control/smtproutes",
        "var-qmail/control/defaultdelivery",
        "var-qmail/users/assign",
        "home-vpopmail/domains/bounce.example/vpasswd",
        "home-vpopmail/include/vpopmail_config.h",
        "routes/relay.example",
    ],
)
def test_a_fifo_as_a_configuration_file_is_an_error_naming_it(tree, where):
    vpop_tree(tree)
    tree.ctl("rcpthosts", "example.com", "bounce.example", "catch.example", "relay.example")
    tree.ctl("locals", "example.com")
    tree.ctl("smtproutes", "relay.example:10.0.0.1")
    tree.user("bob", 1000)
    tree.write(tree.root / "routes" / "relay.example", "ann\n")
    (tree.users / "cdb").unlink()  # so that users/assign is read
    path = tree.root / where
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    with pytest.raises(QmailkitError) as caught:
        keys(tree, smtproutes_dir=tree.root / "routes")
    assert str(caught.value) == (
        f"{path}: is a FIFO, not a regular file (replace it with a regular file)"
    )
    assert caught.value.exit_code == 111


# -- messages --------------------------------------------------------------------------------


def test_catch_all_warning_names_the_domains(tree):
    tree.ctl("rcpthosts", "example.com", "example.net")
    tree.ctl("locals", "example.com", "example.net")
    home = tree.user("bob", 1000, {".qmail-default": "./Maildir/\n"})
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert rec.warnings == [
        (
            f"user bob ({home}/.qmail-default): every address bob-*@D for "
            "each local domain D (example.com, example.net) is accepted "
            "(catch-all)"
        )
    ]
    tree.ctl("locals", "example.com")
    tree.ctl("rcpthosts", "example.com")
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd))
    assert rec.warnings == [
        (
            f"user bob ({home}/.qmail-default): every address "
            "bob-*@example.com is accepted (catch-all)"
        )
    ]
