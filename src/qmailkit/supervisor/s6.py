"""s6 (s6-svscan/s6-supervise): a 35-byte ``supervise/status``.

Layout (s6 2.11): TAI64N of the last change (12), TAI64N of readiness (12),
pid (8 bytes big-endian), wait status (2 bytes big-endian), flags (bit 0
paused, bit 1 finishing, bit 2 want up, bit 3 ready).  s6 writes real TAI
labels (leap seconds included), 27 s ahead of daemontools' convention.
"""

from __future__ import annotations

from qmailkit.supervisor import ServiceStatus, Supervisor
from qmailkit.tai64n import TAI_OFFSET


class S6(Supervisor):
    kind = "s6"
    tai_offset = TAI_OFFSET

    def decode_status(self, service: str, raw: bytes, normally_up: bool) -> ServiceStatus:
        if len(raw) < 35:
            return ServiceStatus(service, True, False, None, None, normally_up, None)
        pid = int.from_bytes(raw[24:32], "big")
        flags = raw[34]
        finishing = bool(flags & 2)
        up = pid != 0 and not finishing
        want = "u" if flags & 4 else "d"
        return ServiceStatus(
            path=service,
            supervised=True,
            up=up,
            # while finishing, the pid field still names the dead process (or ./finish)
            pid=pid if up else None,
            seconds=self.seconds_since(raw[:12]),
            normally_up=normally_up,
            want=self._want(up, ord(want)),
            paused=bool(flags & 1),
            ready=bool(flags & 8),
        )
