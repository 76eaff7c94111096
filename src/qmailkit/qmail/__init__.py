"""The qmail configuration: how qmail, vpopmail, fastforward and ezmlm decide which addresses exist.

* ``control``: control files read exactly as qmail reads them.
* ``assign``: users/assign and users/cdb (virtual users win over system users).
* ``vpopmail``: vpasswd files, domain directories, the SQL-backend programs.
* ``dotqmail``: ``.qmail-EXT`` file names and what a delivery file does.
* ``delivery``: qmail-send's, qmail-lspawn's, qmail-getpw's and qmail-local's rules (who
  answers a local part) over one snapshot of the configuration.
* ``recipients``: every address accepted, with its source (the validrcptto keys).
* ``validrcptto``: the one implementation of the validrcptto.cdb lookup order.
"""
