"""runit (runsvdir/runsv): a 20-byte ``supervise/status``.

The first 18 bytes are laid out as daemontools' (TAI64N, pid little-endian,
paused, want); then a "term sent" flag and the state (0 down, 1 run, 2 finish).
"""

from __future__ import annotations

from qmailkit.supervisor import ServiceStatus, Supervisor


class Runit(Supervisor):
    kind = "runit"

    def decode_status(self, service: str, raw: bytes, normally_up: bool) -> ServiceStatus:
        if len(raw) < 20:
            return ServiceStatus(service, True, False, None, None, normally_up, None)
        pid = int.from_bytes(raw[12:16], "little")
        up = pid != 0 and raw[19] == 1
        return ServiceStatus(
            path=service,
            supervised=True,
            up=up,
            pid=pid or None,
            seconds=self.seconds_since(raw[:12]),
            normally_up=normally_up,
            want=self._want(up, raw[17]),
            paused=bool(raw[16]),
        )
