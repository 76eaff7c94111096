"""Rendering run scripts: exact scripts for reviewed configs, the start-time checks run for
real under sh, what each RenderedService tells apply and check, and sh -n / dash -n for all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.services_render import SHELLS, make_box, make_standins, run_script, toml_str

from qmailkit.services import config, render
from qmailkit.services.types import TYPES

# The config the golden scripts below come from (reviewed by hand).
GOLDEN_CONFIG = """\
[supervisor]
kind = "runit"
log_count = 10
log_size = 100000

[services.send]
type = "qmail-send"

[services.mx]
type = "qmail-smtpd"
ip = "192.0.2.25"
hostname = "mail.example.org"
rbl_allow = ["list.dnswl.org"]
rbl_block = ["zen.spamhaus.org:Listed, see https://www.spamhaus.org/"]
greylist = "/var/qmail/bin/jgreylist"
maxrcpt = 100

[services.submission]
type = "qmail-smtpd"
profile = "submission"
ip = "0"
auth_cdb = "/var/qmail/control/auth.cdb"
validrcptto_cdb = ""
softlimit = 64000000
auth_set = { VALIDRCPTTO_CDB = "", MAXRCPT = "0" }
env = { DATABYTES = "20000000" }

[services.smtps]
type = "qmail-smtpd"
profile = "smtps"
ip = "0"
domainkeys = true
qmailqueue = "/var/qmail/bin/simscan"
dksign = "/etc/domainkeys/%/default"

[services.local]
type = "qmail-smtpd"
profile = "local"

[services.imapssl]
type = "courier-imap"
profile = "imapssl"
ip = "0"
maxprocs = 100

[services.pop3]
type = "courier-imap"
profile = "pop3"
ip = "0"

[services.pop3d]
type = "qmail-pop3d"
ip = "0"
rules = "/etc/tcp/pop3.cdb"

[services.passwd]
type = "courierpassd"
authservice = "imap"

[services.vpopmaild]
type = "vpopmaild"
"""

BODIES = {
    "send": r"""
exec 2>&1

# The default delivery: control/defaultdelivery, else ./Maildir/.
DELIVERY=$(cat /var/qmail/control/defaultdelivery 2>/dev/null)
[ -n "$DELIVERY" ] || DELIVERY=./Maildir/

# The command, logged before it runs.
set -- qmail-start "$DELIVERY"
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
""",
    "mx": r"""
exec 2>&1

# Where to listen and as whom (the original refuses to start without IP).
IP=192.0.2.25
[ -n "$IP" ] || fatal 'ip is not set: set services.mx.ip in /tmp/golden.toml'
QUSER=qmaild
QUID=$(id -u "$QUSER") && QGID=$(id -g "$QUSER") ||
	fatal "unknown user $QUSER: create it or change services.mx.user"
LOCAL=mail.example.org

# Without control/rcpthosts qmail-smtpd relays for everyone: create it empty.
if [ ! -e /var/qmail/control/rcpthosts ]; then
	echo 'warning: /var/qmail/control/rcpthosts was missing; created it empty'
	: > /var/qmail/control/rcpthosts && chmod 644 /var/qmail/control/rcpthosts
fi

[ -r /var/qmail/control/servercert.pem ] ||
	echo 'warning: certificate /var/qmail/control/servercert.pem is missing: no STARTTLS'
[ -r /etc/tcp/smtp.cdb ] || fatal 'rules cdb /etc/tcp/smtp.cdb is missing: compile it with qmailkit tcprules'
have /home/vpopmail/bin/vchkpw || fatal 'checkpassword program /home/vpopmail/bin/vchkpw not found'
have /bin/true || fatal 'program /bin/true not found'

# The environment qmail-smtpd and its helpers read (only what is set).
setenv TLS_SERVER_CERT /var/qmail/control/servercert.pem
setenv SSL 0
setenv JGREYLIST_DIR /var/qmail/jgreylist
setenv JGREYLIST_BY_IP 0
setenv JGREYLIST_HOLDTIME 120
setenv JGREYLIST_LOG 1
setenv JGREYLIST_TIMEOUT 60
setenv SMTPGREETING 'Mail server ready'
setenv GREETDELAY 5
setenv DROP_PRE_GREET 1
setenv FORCE_TLS 0
setenv DENY_TLS 0
setenv MFCHECK 3
setenv MAXRCPT 100
setenv QMAILSMTPD_LOG_MAIL 1
setenv QMAILSMTPD_LOG_RCPT 1
setenv REQUIRE_AUTH 0
setenv ALLOW_INSECURE_AUTH 0
setenv VALIDRCPTTO_CDB /var/qmail/control/validrcptto.cdb
setenv VALIDRCPTTO_LIMIT 10
setenv VALIDRCPTTO_LOG 2
setenv SPFBEHAVIOR 3
setenv SPF_LOG 1
setenv SPF_BLOCK_PLUS_ALL 1

# The command, logged before it runs.
set -- tcpserver -vR -l "$LOCAL" -c 50 -u "$QUID" -g "$QGID" -x /etc/tcp/smtp.cdb "$IP" 25 \
	fixcrio rblsmtpd -t0 -a list.dnswl.org -r \
	'zen.spamhaus.org:Listed, see https://www.spamhaus.org/' /var/qmail/bin/jgreylist qmail-smtpd \
	"$LOCAL" /home/vpopmail/bin/vchkpw /bin/true
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
""",  # noqa: E501 - the generated lines, as long as they are
    "submission": r"""
exec 2>&1

# Where to listen and as whom (the original refuses to start without IP).
IP=0
[ -n "$IP" ] || fatal 'ip is not set: set services.submission.ip in /tmp/golden.toml'
QUSER=qmaild
QUID=$(id -u "$QUSER") && QGID=$(id -g "$QUSER") ||
	fatal "unknown user $QUSER: create it or change services.submission.user"
# The host name: first line of control/me.
LOCAL=$(head -n 1 /var/qmail/control/me 2>/dev/null)
[ -n "$LOCAL" ] || fatal 'no host name: /var/qmail/control/me is missing or empty; set services.submission.hostname'

# Without control/rcpthosts qmail-smtpd relays for everyone: create it empty.
if [ ! -e /var/qmail/control/rcpthosts ]; then
	echo 'warning: /var/qmail/control/rcpthosts was missing; created it empty'
	: > /var/qmail/control/rcpthosts && chmod 644 /var/qmail/control/rcpthosts
fi

[ -r /var/qmail/control/servercert.pem ] || fatal 'certificate /var/qmail/control/servercert.pem is missing or unreadable (force_tls needs it)'
[ -r /etc/tcp/smtp.cdb ] || fatal 'rules cdb /etc/tcp/smtp.cdb is missing: compile it with qmailkit tcprules'
[ -r /var/qmail/control/auth.cdb ] || fatal 'auth cdb /var/qmail/control/auth.cdb is missing: build it with mkauth'

# The environment qmail-smtpd and its helpers read (only what is set).
setenv TLS_SERVER_CERT /var/qmail/control/servercert.pem
setenv SSL 0
setenv SMTPGREETING 'Mail server ready'
setenv GREETDELAY 0
setenv DROP_PRE_GREET 0
setenv FORCE_TLS 1
setenv DENY_TLS 0
setenv MFCHECK 0
setenv QMAILSMTPD_LOG_MAIL 1
setenv QMAILSMTPD_LOG_RCPT 1
setenv REQUIRE_AUTH 1
setenv ALLOW_INSECURE_AUTH 0
setenv VALIDRCPTTO_LIMIT 10
setenv VALIDRCPTTO_LOG 2
setenv SPFBEHAVIOR 0
setenv SPF_LOG 1
setenv SPF_BLOCK_PLUS_ALL 1
setenv AUTH_CDB /var/qmail/control/auth.cdb
setenv AUTH_SET_VALIDRCPTTO_CDB ''
setenv AUTH_SET_MAXRCPT 0

# From the env table of the config.
setenv DATABYTES 20000000

# The command, logged before it runs.
set -- softlimit -m 64000000 tcpserver -vR -l "$LOCAL" -c 50 -u "$QUID" -g "$QGID" -x \
	/etc/tcp/smtp.cdb "$IP" 587 qmail-smtpd
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
""",  # noqa: E501 - the generated lines, as long as they are
    "smtps": r"""
exec 2>&1

# Where to listen and as whom (the original refuses to start without IP).
IP=0
[ -n "$IP" ] || fatal 'ip is not set: set services.smtps.ip in /tmp/golden.toml'
QUSER=qmaild
QUID=$(id -u "$QUSER") && QGID=$(id -g "$QUSER") ||
	fatal "unknown user $QUSER: create it or change services.smtps.user"
# The host name: first line of control/me.
LOCAL=$(head -n 1 /var/qmail/control/me 2>/dev/null)
[ -n "$LOCAL" ] || fatal 'no host name: /var/qmail/control/me is missing or empty; set services.smtps.hostname'

# Without control/rcpthosts qmail-smtpd relays for everyone: create it empty.
if [ ! -e /var/qmail/control/rcpthosts ]; then
	echo 'warning: /var/qmail/control/rcpthosts was missing; created it empty'
	: > /var/qmail/control/rcpthosts && chmod 644 /var/qmail/control/rcpthosts
fi

# SMTPS: sslserver does TLS; the certificate and key are in one PEM file.
[ -r /var/qmail/control/servercert.pem ] || fatal 'certificate /var/qmail/control/servercert.pem is missing or unreadable'
[ -r /etc/tcp/smtp.cdb ] || fatal 'rules cdb /etc/tcp/smtp.cdb is missing: compile it with qmailkit tcprules'
have /home/vpopmail/bin/vchkpw || fatal 'checkpassword program /home/vpopmail/bin/vchkpw not found'
have /bin/true || fatal 'program /bin/true not found'
[ -x /var/qmail/bin/qmail-dk ] || fatal 'domainkeys = true but /var/qmail/bin/qmail-dk is missing: install the DK patch'

# The environment qmail-smtpd and its helpers read (only what is set).
setenv CERTFILE /var/qmail/control/servercert.pem
setenv KEYFILE ''
setenv DHFILE ''
setenv SSL 1
setenv SMTPGREETING 'Mail server ready'
setenv GREETDELAY 0
setenv DROP_PRE_GREET 0
setenv FORCE_TLS 0
setenv DENY_TLS 0
setenv MFCHECK 0
setenv QMAILSMTPD_LOG_MAIL 1
setenv QMAILSMTPD_LOG_RCPT 1
setenv REQUIRE_AUTH 1
setenv ALLOW_INSECURE_AUTH 0
setenv VALIDRCPTTO_CDB /var/qmail/control/validrcptto.cdb
setenv VALIDRCPTTO_LIMIT 10
setenv VALIDRCPTTO_LOG 2
setenv SPFBEHAVIOR 0
setenv SPF_LOG 1
setenv SPF_BLOCK_PLUS_ALL 1
setenv DKQUEUE /var/qmail/bin/simscan
setenv AUTH_UNSET_DKVERIFY 1
setenv QMAILQUEUE /var/qmail/bin/qmail-dk
setenv DKSIGN /etc/domainkeys/%/default
setenv NOP0FCHECK 1

# The command, logged before it runs.
set -- sslserver -e -vR -l "$LOCAL" -c 50 -u "$QUID" -g "$QGID" -x /etc/tcp/smtp.cdb "$IP" 465 \
	qmail-smtpd "$LOCAL" /home/vpopmail/bin/vchkpw /bin/true
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
""",  # noqa: E501 - the generated lines, as long as they are
    "local": r"""
exec 2>&1

# Where to listen and as whom (the original refuses to start without IP).
IP=127.0.0.1
[ -n "$IP" ] || fatal 'ip is not set: set services.local.ip in /tmp/golden.toml'
QUSER=qmaild
QUID=$(id -u "$QUSER") && QGID=$(id -g "$QUSER") ||
	fatal "unknown user $QUSER: create it or change services.local.user"
# The host name: first line of control/me.
LOCAL=$(head -n 1 /var/qmail/control/me 2>/dev/null)
[ -n "$LOCAL" ] || fatal 'no host name: /var/qmail/control/me is missing or empty; set services.local.hostname'

# Without control/rcpthosts qmail-smtpd relays for everyone: create it empty.
if [ ! -e /var/qmail/control/rcpthosts ]; then
	echo 'warning: /var/qmail/control/rcpthosts was missing; created it empty'
	: > /var/qmail/control/rcpthosts && chmod 644 /var/qmail/control/rcpthosts
fi

[ -r /var/qmail/control/servercert.pem ] ||
	echo 'warning: certificate /var/qmail/control/servercert.pem is missing: no STARTTLS'

# The environment qmail-smtpd and its helpers read (only what is set).
setenv RELAYCLIENT ''
setenv TLS_SERVER_CERT /var/qmail/control/servercert.pem
setenv SSL 0
setenv SMTPGREETING 'Mail server ready'
setenv GREETDELAY 0
setenv DROP_PRE_GREET 0
setenv FORCE_TLS 0
setenv DENY_TLS 0
setenv MFCHECK 3
setenv QMAILSMTPD_LOG_MAIL 1
setenv QMAILSMTPD_LOG_RCPT 1
setenv REQUIRE_AUTH 0
setenv ALLOW_INSECURE_AUTH 0
setenv VALIDRCPTTO_CDB /var/qmail/control/validrcptto.cdb
setenv VALIDRCPTTO_LIMIT 10
setenv VALIDRCPTTO_LOG 2
setenv SPFBEHAVIOR 0
setenv SPF_LOG 1
setenv SPF_BLOCK_PLUS_ALL 1

# The command, logged before it runs.
set -- tcpserver -vR -l "$LOCAL" -c 50 -u "$QUID" -g "$QGID" "$IP" 25 fixcrio qmail-smtpd
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
""",  # noqa: E501 - the generated lines, as long as they are
    "imapssl": r"""
exec 2>&1

# Where to listen.
IP=0
[ -n "$IP" ] || fatal 'ip is not set: set services.imapssl.ip in /tmp/golden.toml'

# Courier's own settings, exported as its start scripts do.
[ -r /usr/lib/courier-imap/etc/imapd ] || fatal 'Courier config file /usr/lib/courier-imap/etc/imapd is missing'
[ -r /usr/lib/courier-imap/etc/imapd-ssl ] || fatal 'Courier config file /usr/lib/courier-imap/etc/imapd-ssl is missing'
set -a
. /usr/lib/courier-imap/etc/imapd
. /usr/lib/courier-imap/etc/imapd-ssl
set +a

# Overrides from the qmailkit config.
setenv MAXDAEMONS 100
setenv IMAP_TLS 1
[ -n "$COURIERTLS" ] || COURIERTLS=/usr/lib/courier-imap/bin/couriertls
[ -r "$TLS_CERTFILE" ] || fatal "certificate ${TLS_CERTFILE:-(not set)} is missing"
[ -x "$COURIERTLS" ] || fatal "couriertls not found: $COURIERTLS"
[ -n "$MAXDAEMONS" ] || fatal 'MAXDAEMONS is not set in the Courier config files'
[ -n "$MAXPERIP" ] || fatal 'MAXPERIP is not set in the Courier config files'
[ -n "$MAILDIRPATH" ] || fatal 'MAILDIRPATH is not set in the Courier config files'

# The command, logged before it runs.
set -- /usr/lib/courier-imap/libexec/couriertcpd -address="$IP" -maxprocs="$MAXDAEMONS" \
	-maxperip="$MAXPERIP" ${TCPDOPTS} 993 "$COURIERTLS" -server -tcpd \
	/usr/lib/courier-imap/sbin/imaplogin /usr/lib/courier-imap/bin/imapd "$MAILDIRPATH"
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
""",  # noqa: E501 - the generated lines, as long as they are
    "pop3": r"""
exec 2>&1

# Where to listen.
IP=0
[ -n "$IP" ] || fatal 'ip is not set: set services.pop3.ip in /tmp/golden.toml'

# Courier's own settings, exported as its start scripts do.
[ -r /usr/lib/courier-imap/etc/pop3d ] || fatal 'Courier config file /usr/lib/courier-imap/etc/pop3d is missing'
set -a
. /usr/lib/courier-imap/etc/pop3d
set +a

# Overrides from the qmailkit config.
setenv POP3_STARTTLS "$POP3DSTARTTLS"
[ -n "$MAXDAEMONS" ] || fatal 'MAXDAEMONS is not set in the Courier config files'
[ -n "$MAXPERIP" ] || fatal 'MAXPERIP is not set in the Courier config files'
[ -n "$MAILDIRPATH" ] || fatal 'MAILDIRPATH is not set in the Courier config files'

# The command, logged before it runs.
set -- /usr/lib/courier-imap/libexec/couriertcpd -address="$IP" -maxprocs="$MAXDAEMONS" \
	-maxperip="$MAXPERIP" ${TCPDOPTS} 110 /usr/lib/courier-imap/sbin/pop3login \
	/usr/lib/courier-imap/bin/pop3d "$MAILDIRPATH"
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
""",  # noqa: E501 - the generated lines, as long as they are
    "pop3d": r"""
exec 2>&1

# Where to listen and as whom.
IP=0
[ -n "$IP" ] || fatal 'ip is not set: set services.pop3d.ip in /tmp/golden.toml'
[ -r /etc/tcp/pop3.cdb ] || fatal 'rules cdb /etc/tcp/pop3.cdb is missing: compile it with qmailkit tcprules'
LOCAL=$(head -n 1 /var/qmail/control/me 2>/dev/null)
[ -n "$LOCAL" ] || fatal 'no host name: /var/qmail/control/me is missing or empty; set services.pop3d.hostname'
have /home/vpopmail/bin/vchkpw || fatal 'checkpassword program /home/vpopmail/bin/vchkpw not found'

# The command, logged before it runs.
set -- tcpserver -vRH -l "$LOCAL" -c 40 -x /etc/tcp/pop3.cdb "$IP" 110 qmail-popup "$LOCAL" \
	/home/vpopmail/bin/vchkpw qmail-pop3d Maildir
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
""",  # noqa: E501 - the generated lines, as long as they are
    "passwd": r"""
exec 2>&1

# Where to listen and as whom.
IP=127.0.0.1
[ -n "$IP" ] || fatal 'ip is not set: set services.passwd.ip in /tmp/golden.toml'

# The command, logged before it runs.
set -- tcpserver -vRH -l 0 -c 40 "$IP" 106 courierpassd --stderr -s imap
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
""",
    "vpopmaild": r"""
exec 2>&1

# Where to listen and as whom.
IP=127.0.0.1
[ -n "$IP" ] || fatal 'ip is not set: set services.vpopmaild.ip in /tmp/golden.toml'
SUSER=vpopmail
SUID=$(id -u "$SUSER") && SGID=$(id -g "$SUSER") ||
	fatal "unknown user $SUSER: create it or change services.vpopmaild.user"

# The command, logged before it runs.
set -- tcpserver -vRH -l 0 -c 40 -u "$SUID" -g "$SGID" "$IP" 8900 /home/vpopmail/bin/vpopmaild
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
""",
}


SEND_FULL = r"""
#!/bin/sh
# qmail-send service "send"
# Generated by qmailkit from "/etc/qmailkit/qmailkit.toml".
# Do not edit: change the config and run "qmailkit services apply".
#
# Effective settings (original variable in brackets):
#   program   = "qmail-start"
#   path      = "/var/qmail/bin:/usr/local/bin:/usr/bin:/bin"  [PATH]
#   softlimit = 0

# Start again from an empty environment: only PATH and what this script exports
# reach the program, never what the supervisor was started with.
[ "${_qk_clean-}" = "$$" ] || exec /usr/bin/env -i _qk_clean="$$" /bin/sh "$0" "$@"
unset _qk_clean
PATH=/var/qmail/bin:/usr/local/bin:/usr/bin:/bin
export PATH

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

exec 2>&1

# The default delivery: control/defaultdelivery, else ./Maildir/.
DELIVERY=$(cat /var/qmail/control/defaultdelivery 2>/dev/null)
[ -n "$DELIVERY" ] || DELIVERY=./Maildir/

# The command, logged before it runs.
set -- qmail-start "$DELIVERY"
have "$1" || fatal "program not found: $1"
show_command "$@"
exec "$@"
"""

LOG_RUNS = {
    "daemontools": r"""
#!/bin/sh
# log service of "mx" (daemontools)
# Generated by qmailkit from "/etc/qmailkit/qmailkit.toml".
# Do not edit: change the config and run "qmailkit services apply".
#
# Effective settings (original variable in brackets):
#   log_user  = "qmaill"
#   log_size  = 1048576
#   log_count = 1024

# Start again from an empty environment: only PATH and what this script exports
# reach the program, never what the supervisor was started with.
[ "${_qk_clean-}" = "$$" ] || exec /usr/bin/env -i _qk_clean="$$" /bin/sh "$0" "$@"
unset _qk_clean
PATH=/var/qmail/bin:/usr/local/bin:/usr/bin:/bin
export PATH

exec setuidgid qmaill multilog t s1048576 n1024 ./main
""",
    "runit": r"""
#!/bin/sh
# log service of "mx" (runit)
# Generated by qmailkit from "/etc/qmailkit/qmailkit.toml".
# Do not edit: change the config and run "qmailkit services apply".
#
# Effective settings (original variable in brackets):
#   log_user  = "qmaill"
#   log_size  = 1048576
#   log_count = 1024

# Start again from an empty environment: only PATH and what this script exports
# reach the program, never what the supervisor was started with.
[ "${_qk_clean-}" = "$$" ] || exec /usr/bin/env -i _qk_clean="$$" /bin/sh "$0" "$@"
unset _qk_clean
PATH=/var/qmail/bin:/usr/local/bin:/usr/bin:/bin
export PATH

# Size and count are in main/config (n1023: svlogd keeps n old files, multilog n-1).
exec chpst -u qmaill svlogd -t ./main
""",
    "s6": r"""
#!/bin/sh
# log service of "mx" (s6)
# Generated by qmailkit from "/etc/qmailkit/qmailkit.toml".
# Do not edit: change the config and run "qmailkit services apply".
#
# Effective settings (original variable in brackets):
#   log_user  = "qmaill"
#   log_size  = 1048576
#   log_count = 1024

# Start again from an empty environment: only PATH and what this script exports
# reach the program, never what the supervisor was started with.
[ "${_qk_clean-}" = "$$" ] || exec /usr/bin/env -i _qk_clean="$$" /bin/sh "$0" "$@"
unset _qk_clean
PATH=/var/qmail/bin:/usr/local/bin:/usr/bin:/bin
export PATH

# n1023: s6-log keeps n old files, multilog n-1.
exec s6-setuidgid qmaill s6-log t s1048576 n1023 ./main
""",
}

MX = '[services.mx]\ntype = "qmail-smtpd"\n'


def rendered(text: str, path: str = "/etc/qmailkit/qmailkit.toml"):
    return render.render(config.loads(text, path))


def run_text(r) -> str:
    return r.files["run"][0].decode()


# --------------------------------------------------------------------------------------------
# Exact scripts


@pytest.mark.parametrize("name", list(BODIES))
def test_golden_bodies(name):
    r = rendered(GOLDEN_CONFIG, "/tmp/golden.toml")[name]
    text = run_text(r)
    assert text[text.index("exec 2>&1") :] == BODIES[name][1:]


def test_golden_full_send_script():
    r = rendered('[services.send]\ntype = "qmail-send"\n')["send"]
    assert run_text(r) == SEND_FULL[1:]
    assert r.files["run"][1] == 0o755


@pytest.mark.parametrize("kind", list(LOG_RUNS))
def test_golden_log_run(kind):
    r = rendered(f'[supervisor]\nkind = "{kind}"\n' + MX)["mx"]
    assert r.files["log/run"] == (LOG_RUNS[kind][1:].encode(), 0o755)
    assert r.dirs == ["log", "log/main"]
    assert r.log_owner == "qmaill"
    if kind == "runit":
        assert r.files["log/main/config"] == (b"s1048576\nn1023\n", 0o644)
    else:
        assert "log/main/config" not in r.files
    assert sorted(r.files) == sorted(
        ["run", "log/run"] + (["log/main/config"] if kind == "runit" else [])
    )


def test_header_lists_settings_and_original_names():
    text = run_text(
        rendered(
            MX + 'ip = "0"\ngreeting = "hi there"\nenv = { DATABYTES = "1", X = "a\\texit 3" }\n'
        )["mx"]
    )
    head = text[: text.index("\n# Start again from an empty environment")]
    assert '#   ip                  = "0"  [IP]\n' in head
    assert '#   greeting            = "hi there"  [SMTPGREETING]\n' in head
    assert '#   rbl_block           = ["sbl.spamhaus.org", "xbl.spamhaus.org"]  [RBL_BAD]' in head
    assert '#   env.DATABYTES       = "1"\n' in head
    assert '#   env.X               = "a\\texit 3"\n' in head  # the tab stays escaped
    assert "greylist_dir" not in head  # irrelevant while greylisting is off
    assert all(line.startswith("#") for line in head.splitlines() if line)


def test_header_escapes_a_newline_in_the_default_delivery():
    """default_delivery is dot-qmail text and may hold several lines (env values may not)."""
    send = '[services.s]\ntype = "qmail-send"\ndefault_delivery = "./Maildir/\\nexit 3"\n'
    head = run_text(rendered(send)["s"])
    head = head[: head.index("\n# Start again from an empty environment")]
    assert '#   default_delivery = "./Maildir/\\nexit 3"  [control/defaultdelivery]\n' in head
    assert all(line.startswith("#") for line in head.splitlines() if line)


def test_config_path_with_a_newline_stays_in_the_comment(tmp_path):
    text = run_text(rendered(MX, "/etc/odd\nexit 3\n.toml")["mx"])
    assert text.splitlines()[2] == '# Generated by qmailkit from "/etc/odd\\nexit 3\\n.toml".'
    # elsewhere the path is inside single quotes (a fatal message): still one word
    assert "exit 3" not in text.splitlines()
    script = tmp_path / "run"
    script.write_text(text)
    for shell in ("sh", "dash"):
        assert subprocess.run([shell, "-n", str(script)], check=False).returncode == 0


# --------------------------------------------------------------------------------------------
# Every type, profile and supervisor: the scripts parse


def all_variants():
    for kind in ("daemontools", "runit", "s6"):
        for tname, mod in TYPES.items():
            for profile in getattr(mod, "PROFILES", {None: {}}):
                yield kind, tname, profile


def test_every_script_passes_sh_n_and_dash_n(tmp_path):
    parts = []
    for i, (kind, tname, profile) in enumerate(all_variants()):
        prof = f'profile = "{profile}"\n' if profile else ""
        parts.append(
            (
                kind,
                (
                    f'[services.s{i}]\ntype = "{tname}"\n{prof}'
                    f'env = {{ A = "x\'y" }}\nsoftlimit = 10000000\n'
                ),
            )
        )
    seen = 0
    for kind in ("daemontools", "runit", "s6"):
        text = f'[supervisor]\nkind = "{kind}"\n' + "".join(p for k, p in parts if k == kind)
        for name, r in rendered(text).items():
            for fname, (data, mode) in r.files.items():
                if not fname.endswith("run"):
                    continue
                assert mode == 0o755
                path = tmp_path / f"{kind}-{name}-{fname.replace('/', '-')}"
                path.write_bytes(data)
                for shell in ("sh", "dash"):
                    p = subprocess.run([shell, "-n", str(path)], capture_output=True, check=False)
                    assert p.returncode == 0, (kind, name, fname, shell, p.stderr)
                seen += 1
    assert seen == 2 * 3 * sum(len(getattr(m, "PROFILES", {None: {}})) for m in TYPES.values())


# --------------------------------------------------------------------------------------------
# What apply and check get


def test_rendered_service_fields():
    rs = rendered(GOLDEN_CONFIG)
    mx = rs["mx"]
    assert (mx.name, mx.type, mx.dir) == ("mx", "qmail-smtpd", "/var/qmail/supervise/mx")
    assert mx.listen == ("192.0.2.25", 25)
    assert mx.rules == ("/etc/tcp/smtp", "/etc/tcp/smtp.cdb")
    assert mx.user == "qmaild"
    assert mx.checks.users == ["qmaild", "qmaill"]
    assert mx.checks.search_path == ["/var/qmail/bin", "/usr/local/bin", "/usr/bin", "/bin"]
    progs = [p for p, _ in mx.checks.programs]
    assert progs == [
        "tcpserver",
        "/home/vpopmail/bin/vchkpw",
        "/bin/true",
        "fixcrio",
        "rblsmtpd",
        "/var/qmail/bin/jgreylist",
        "qmail-smtpd",
        "chpst",
        "svlogd",
    ]
    assert dict(mx.checks.programs)["rblsmtpd"] == "services.mx.rblsmtpd"
    files = {(f.path, f.kind, f.user, f.secret, f.key) for f in mx.checks.files}
    assert files == {
        ("/var/qmail/control/servercert.pem", "cert", "qmaild", True, "services.mx.tls_cert"),
        ("/etc/tcp/smtp.cdb", "rules", "qmaild", False, "services.mx.rules"),
        (
            "/var/qmail/control/validrcptto.cdb",
            "validrcptto_cdb",
            "qmaild",
            False,
            "services.mx.validrcptto_cdb",
        ),
    }
    assert mx.checks.warnings == []
    sub = rs["submission"]
    assert {(f.path, f.kind) for f in sub.checks.files} >= {
        ("/var/qmail/control/auth.cdb", "auth_cdb")
    }
    assert "softlimit" in [p for p, _ in sub.checks.programs]
    assert rs["smtps"].checks.files[0].user is None  # sslserver reads the cert as root
    assert "sslserver" in [p for p, _ in rs["smtps"].checks.programs]
    assert rs["local"].rules is None and rs["local"].listen == ("127.0.0.1", 25)
    assert rs["send"].listen is None and rs["send"].rules is None and rs["send"].user is None
    assert rs["pop3d"].rules == ("/etc/tcp/pop3", "/etc/tcp/pop3.cdb")
    assert rs["pop3d"].user is None  # checkpassword must start as root
    assert rs["vpopmaild"].user == "vpopmail" and rs["vpopmaild"].listen == ("127.0.0.1", 8900)
    assert rs["passwd"].listen == ("127.0.0.1", 106)
    assert rs["imapssl"].listen == ("0", 993)
    assert [p for p, _ in rs["imapssl"].checks.programs][:4] == [
        "/usr/lib/courier-imap/bin/couriertls",
        "/usr/lib/courier-imap/libexec/couriertcpd",
        "/usr/lib/courier-imap/sbin/imaplogin",
        "/usr/lib/courier-imap/bin/imapd",
    ]


@pytest.mark.parametrize(
    "extra, key, fragment",
    [
        ("", "services.mx.ip", "no listen address"),
        (
            'ip = "0"\nallow_insecure_auth = true\n',
            "services.mx.allow_insecure_auth",
            "without TLS",
        ),
        ('ip = "0"\ntls_cert = ""\n', "services.mx.auth", "never offered"),
    ],
)
def test_config_warnings(extra, key, fragment):
    warnings = rendered(MX + extra)["mx"].checks.warnings
    assert [w[0] for w in warnings] == [key]
    assert fragment in warnings[0][1] and warnings[0][2]


@pytest.mark.parametrize(
    "extra, key, fragment",
    [
        ("relay_client = true\n", "services.mx.relay_client", "open relay"),
        ('env = { RELAYCLIENT = "" }\n', "services.mx.env.RELAYCLIENT", "open relay"),
        ("force_tls = true\n", "services.mx.force_tls", "port-25 MX"),
        ("require_auth = true\n", "services.mx.require_auth", "port-25 MX"),
    ],
)
def test_the_dangerous_settings_are_the_types_policy_not_render_warnings(extra, key, fragment):
    """Declared once, by the smtpd type (services check and apply's refusal use it)."""
    text = MX + 'ip = "0"\nrules = ""\n' + extra
    assert rendered(text)["mx"].checks.warnings == []
    [finding] = TYPES["qmail-smtpd"].policy(config.loads(text).services["mx"])
    assert (finding.level, finding.key) == ("error", key)
    assert fragment in finding.message and finding.hint


def test_local_profile_on_loopback_is_no_open_relay():
    assert rendered(MX + 'profile = "local"\n')["mx"].checks.warnings == []


def test_render_is_pure():
    """Rendering opens no file: everything it knows comes from the config object."""
    cfg = config.loads(GOLDEN_CONFIG)
    opened: list[str] = []
    active = [True]

    def hook(event, args):
        if active[0] and event in ("open", "os.listdir", "os.scandir"):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    try:
        render.render(cfg)
    finally:
        active[0] = False
    assert [p for p in opened if not p.endswith((".py", ".pyc"))] == []


# --------------------------------------------------------------------------------------------
# The start-time checks, run for real (with a sleep stand-in that does not wait)


box = pytest.fixture(make_box)


def box_config(box: Path, body: str) -> str:
    return "\n".join(
        [
            "[system]",
            f"qmail_home = {toml_str(str(box / 'qmail'))}",
            f"path = [{toml_str(str(box / 'bin'))}, {toml_str(str(box / 'sys'))}]",
            body,
        ]
    )


def smtpd_config(box: Path, extra: str = "") -> str:
    """An mx service in the box; ``extra`` lines (key = value) replace the defaults here."""
    options = {
        "ip": '"0"',
        "user": '"nobody"',
        "tls_cert": toml_str(str(box / "cert.pem")),
        "rules": toml_str(str(box / "rules.cdb")),
        "checkpassword": '"/bin/true"',
        "fixcrio": '""',
        "rbl_block": "[]",
    }
    for line in extra.splitlines():
        key, _, value = line.partition(" = ")
        options[key] = value
    return box_config(box, MX + "".join(f"{k} = {v}\n" for k, v in options.items()))


def run_service(box: Path, text: str, name: str = "mx", shell: str = "sh"):
    r = render.render(config.loads(text, str(box / "q.toml")))[name]
    script = box / f"run-{name}"
    script.write_bytes(r.files["run"][0])
    return run_script(shell, script, box)


@pytest.mark.parametrize("shell", SHELLS)
def test_smtpd_starts_with_the_host_name_from_control_me(box, shell):
    run = run_service(box, smtpd_config(box), shell=shell)
    assert run.rc == 0, run.output
    uid, gid = str(os_uid("nobody")), str(os_gid("nobody"))
    assert run.argv == [
        "-vR",
        "-l",
        "mx.example.org",
        "-c",
        "50",
        "-u",
        uid,
        "-g",
        gid,
        "-x",
        str(box / "rules.cdb"),
        "0",
        "25",
        "qmail-smtpd",
        "mx.example.org",
        "/bin/true",
        "/bin/true",
    ]
    assert run.logged_command() == ["tcpserver", *run.argv]
    assert run.env["TLS_SERVER_CERT"] == str(box / "cert.pem")
    assert run.env["SMTPGREETING"] == "Mail server ready" and run.env["MFCHECK"] == "3"
    assert "RELAYCLIENT" not in run.env and "AUTH_CDB" not in run.env
    lines = run.output.splitlines()
    assert lines[-1].startswith("command-line: tcpserver -vR -l mx.example.org")
    assert 'SMTPGREETING="Mail server ready"' in lines
    assert run.slept == []


def os_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def os_gid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


FATALS = [
    # (extra config, files to remove, expected message)
    ('ip = ""', [], "fatal: ip is not set: set services.mx.ip in {box}/q.toml"),
    (
        'user = "no-such-user-qk"',
        [],
        "fatal: unknown user no-such-user-qk: create it or change services.mx.user",
    ),
    (
        "",
        ["qmail/control/me"],
        "fatal: no host name: {box}/qmail/control/me is missing or empty; set services.mx.hostname",
    ),
    (
        "",
        ["rules.cdb"],
        "fatal: rules cdb {box}/rules.cdb is missing: compile it with qmailkit tcprules",
    ),
    (
        'checkpassword = "/nonexistent/vchkpw"',
        [],
        "fatal: checkpassword program /nonexistent/vchkpw not found",
    ),
    (
        'checkpassword = "{box}/cert.pem"',
        [],  # exists, but is not executable
        "fatal: checkpassword program {box}/cert.pem not found",
    ),
    (
        'checkpassword = "no-such-checkpw"',
        [],
        ("fatal: checkpassword program no-such-checkpw not found"),
    ),
    (
        'auth_cdb = "/nonexistent/auth.cdb"',
        [],
        "fatal: auth cdb /nonexistent/auth.cdb is missing: build it with mkauth",
    ),
    ("ssl = true", ["cert.pem"], "fatal: certificate {box}/cert.pem is missing or unreadable"),
    (
        "force_tls = true",
        ["cert.pem"],
        "fatal: certificate {box}/cert.pem is missing or unreadable (force_tls needs it)",
    ),
    (
        'domainkeys = true\nqmail_dk = "/nonexistent/qmail-dk"',
        [],
        "fatal: domainkeys = true but /nonexistent/qmail-dk is missing: install the DK patch",
    ),
    ("", ["bin/tcpserver"], "fatal: program not found: tcpserver"),
]


@pytest.mark.parametrize("extra, remove, message", FATALS, ids=[f[2][7:40] for f in FATALS])
def test_smtpd_refuses_to_start(box, extra, remove, message):
    for rel in remove:
        (box / rel).unlink()
    for shell in SHELLS:
        run = run_service(box, smtpd_config(box, extra.format(box=box)), shell=shell)
        assert run.rc == 1, (shell, run.output)
        assert run.output.splitlines()[-1] == message.format(box=box), shell
        assert run.slept == ["5"], shell  # so the supervisor does not restart it in a loop
        assert run.argv is None  # nothing was started


def test_missing_starttls_cert_only_warns(box):
    (box / "cert.pem").unlink()
    run = run_service(box, smtpd_config(box))
    assert run.rc == 0
    assert f"warning: certificate {box}/cert.pem is missing: no STARTTLS" in run.output


def test_missing_rcpthosts_is_created_empty(box):
    rcpthosts = box / "qmail/control/rcpthosts"
    rcpthosts.unlink()
    run = run_service(box, smtpd_config(box))
    assert run.rc == 0
    assert rcpthosts.read_bytes() == b""
    assert (rcpthosts.stat().st_mode & 0o777) == 0o644
    assert f"warning: {rcpthosts} was missing; created it empty" in run.output


def test_local_profile_environment(box):
    text = box_config(box, MX + 'profile = "local"\nuser = "nobody"\nfixcrio = ""\n')
    run = run_service(box, text)
    assert run.rc == 0, run.output
    assert run.env["RELAYCLIENT"] == ""
    assert "-x" not in run.argv and "rblsmtpd" not in run.argv
    assert run.argv[-3:] == ["127.0.0.1", "25", "qmail-smtpd"]


def test_auth_set_exports_empty_values(box):
    run = run_service(
        box, smtpd_config(box, 'auth_set = { VALIDRCPTTO_CDB = "" }\nauth_unset = ["DKVERIFY"]')
    )
    assert run.env["AUTH_SET_VALIDRCPTTO_CDB"] == ""
    assert run.env["AUTH_UNSET_DKVERIFY"] == "1"
    assert 'AUTH_SET_VALIDRCPTTO_CDB=""' in run.output.splitlines()


def test_env_table_overrides_and_is_logged(box):
    run = run_service(box, smtpd_config(box, 'env = { SMTPGREETING = "x y", NOBADHELO = 1 }'))
    assert run.env["SMTPGREETING"] == "x y" and run.env["NOBADHELO"] == "1"
    assert run.output.splitlines()[-3:-1] == ['SMTPGREETING="x y"', 'NOBADHELO="1"']


def test_softlimit_wraps_the_whole_command(box):
    run = run_service(box, smtpd_config(box, "softlimit = 30000000"))
    assert run.argv[:3] == ["-m", "30000000", "tcpserver"]
    assert run.logged_command()[:4] == ["softlimit", "-m", "30000000", "tcpserver"]


def test_send_reads_defaultdelivery_at_start(box):
    text = box_config(box, '[services.send]\ntype = "qmail-send"\n')
    run = run_service(box, text, "send")
    assert run.rc == 0 and run.argv == ["./Maildir/"]
    (box / "qmail/control/defaultdelivery").write_text("|preline procmail\n./Maildir/\n")
    run = run_service(box, text, "send")
    assert run.argv == ["|preline procmail\n./Maildir/"]
    assert run.logged_command() == ["qmail-start", "|preline procmail\n./Maildir/"]


def test_courier_sources_its_config_files(box):
    prefix = box / "courier"
    for d in ("bin", "sbin", "libexec", "etc"):
        (prefix / d).mkdir(parents=True)
    make_standins(prefix / "libexec", ("couriertcpd",))
    for prog in ("bin/couriertls", "sbin/imaplogin", "bin/imapd"):
        (prefix / prog).write_text("#!/bin/sh\n")
        (prefix / prog).chmod(0o755)
    (prefix / "etc/imapd").write_text(
        'MAXDAEMONS=40\nMAXPERIP=4\nTCPDOPTS="-nodnslookup -noidentlookup"\n'
        'MAILDIRPATH=Maildir\nIMAPDSTARTTLS=YES\nIMAP_CAPABILITY="IMAP4rev1 UIDPLUS"\n'
    )
    (prefix / "etc/imapd-ssl").write_text(f"TLS_CERTFILE={box}/cert.pem\n")
    text = box_config(
        box,
        "\n".join(
            [
                "[services.imaps]",
                'type = "courier-imap"',
                'profile = "imapssl"',
                'ip = "0"',
                f"prefix = {toml_str(str(prefix))}",
                "maxperip = 8",
                "",
            ]
        ),
    )
    for shell in SHELLS:
        run = run_service(box, text, "imaps", shell)
        assert run.rc == 0, run.output
        assert run.argv == [
            "-address=0",
            "-maxprocs=40",
            "-maxperip=8",
            "-nodnslookup",
            "-noidentlookup",
            "993",
            f"{prefix}/bin/couriertls",
            "-server",
            "-tcpd",
            f"{prefix}/sbin/imaplogin",
            f"{prefix}/bin/imapd",
            "Maildir",
        ]
        assert run.env["IMAP_TLS"] == "1" and run.env["MAXPERIP"] == "8"
        assert run.env["IMAP_CAPABILITY"] == "IMAP4rev1 UIDPLUS"  # set -a exported it
        assert run.env["TLS_CERTFILE"] == f"{box}/cert.pem"
        assert run.logged_command()[0] == f"{prefix}/libexec/couriertcpd"
    (box / "cert.pem").unlink()
    run = run_service(box, text, "imaps")
    assert (run.rc, run.slept) == (1, ["5"])
    assert run.output.splitlines()[-1] == f"fatal: certificate {box}/cert.pem is missing"
    (prefix / "etc/imapd-ssl").unlink()
    run = run_service(box, text, "imaps")
    assert run.output.splitlines()[-1] == (
        f"fatal: Courier config file {prefix}/etc/imapd-ssl is missing"
    )


def test_tcp_services_run(box):
    text = box_config(
        box,
        "\n".join(
            [
                "[services.v]",
                'type = "vpopmaild"',
                'user = "nobody"',
                'program = "/bin/true"',
                "[services.p]",
                'type = "courierpassd"',
                'program = "/bin/true"',
                'authservice = "imap"',
                "[services.a]",
                'type = "courierauthd"',
                'program = "/bin/true"',
                "port = 8999",
                f"rules = {toml_str(str(box / 'rules.cdb'))}",
                "",
            ]
        ),
    )
    uid, gid = str(os_uid("nobody")), str(os_gid("nobody"))
    assert run_service(box, text, "v").argv == [
        "-vRH",
        "-l",
        "0",
        "-c",
        "40",
        "-u",
        uid,
        "-g",
        gid,
        "127.0.0.1",
        "8900",
        "/bin/true",
    ]
    assert run_service(box, text, "p").argv == [
        "-vRH",
        "-l",
        "0",
        "-c",
        "40",
        "127.0.0.1",
        "106",
        "/bin/true",
        "--stderr",
        "-s",
        "imap",
    ]
    assert run_service(box, text, "a").argv == [
        "-vRH",
        "-l",
        "0",
        "-c",
        "40",
        "-x",
        str(box / "rules.cdb"),
        "127.0.0.1",
        "8999",
        "/bin/true",
    ]


def test_pop3d_plain(box):
    text = box_config(
        box, '[services.pop]\ntype = "qmail-pop3d"\nip = "0"\ncheckpassword = "/bin/true"\n'
    )
    run = run_service(box, text, "pop")
    assert run.argv == [
        "-vRH",
        "-l",
        "mx.example.org",
        "-c",
        "40",
        "0",
        "110",
        "qmail-popup",
        "mx.example.org",
        "/bin/true",
        "qmail-pop3d",
        "Maildir",
    ]
    assert "CERTFILE" not in run.env


def test_scripts_do_not_depend_on_the_working_directory(box, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    r = render.render(config.loads(smtpd_config(box), str(box / "q.toml")))["mx"]
    script = other / "run"
    script.write_bytes(r.files["run"][0])
    os.chmod(script, 0o755)
    run = run_script("sh", script, other, {"QK_DUMP": str(box / "dump")})
    assert run.rc == 0, run.output
