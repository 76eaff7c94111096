"""vpopmaild: vpopmail's administration daemon, as the vpopmail user on 127.0.0.1:8900
(the original's setting since 2012)."""

from __future__ import annotations

from qmailkit.services import render as R
from qmailkit.services.config import Config, Option, Service, check_program

OPTIONS: dict[str, Option] = {
    **R.tcp_options("127.0.0.1", 8900, "vpopmail"),
    "program": Option(
        "str",
        lambda system: system.vpopmail_home + "/bin/vpopmaild",
        "the vpopmaild program",
        "",
        check=check_program,
        empty_ok=False,
    ),
}


def build(svc: Service, config: Config) -> R.Built:
    return R.build_tcp_service(svc, config, OPTIONS, [])
