"""The log pipeline: labels, filters, log directories and convert-multilog.

* ``tai64n``: TAI64N labels and ``LocalTime``, the only label → local time code.
* ``filters``: the streaming ``tai64nlocal`` and ``tai64n`` filters.
* ``logdir``: a multilog/svlogd/s6-log directory (``current``, rotated files, reading
  them safely) and the names around it (retired service directories, day files).
* ``convert``: convert-multilog: finding services, converting one, the whole run.
* ``journal``: convert-multilog's commit protocol and its roll-back.
* ``compress``: gzip'ing old day files, streamed.
"""
