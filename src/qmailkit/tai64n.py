"""TAI64N labels, as daemontools, runit and s6 write them."""

from __future__ import annotations

#: daemontools (tai64n, multilog) and runit (svlogd): label = 2^62 + 10 + Unix seconds
LABEL_OFFSET = (1 << 62) + 10
#: s6 (s6-tai64n, s6-log, s6-supervise) writes real TAI: 2^62 + Unix seconds + TAI-UTC
#: (37 s since 2017-01-01), i.e. 27 s ahead of the daemontools convention today.
TAI_OFFSET = (1 << 62) + 37
