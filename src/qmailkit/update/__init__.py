"""``qmailkit update``: keep qmail's databases current and qmail-send in step (issue 11).

* ``hup``: whether qmail-send needs a HUP after locals/virtualdomains changed, the
  guards that refuse one, and the record of each HUP in the state directory.
* ``watch``: the directory watcher for ``--watch``: batches of changed paths
  (inotify, polling fallback).
"""
