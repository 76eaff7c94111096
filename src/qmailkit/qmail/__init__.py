"""The qmail model: how qmail, vpopmail, fastforward and ezmlm decide which addresses exist.

* ``control``: control files read exactly as qmail reads them.
* ``assign``: users/assign and users/cdb (virtual users win over system users).
* ``vpopmail``: vpasswd files, domain directories, the SQL-backend programs.
* ``dotqmail``: ``.qmail-EXT`` file names and what a delivery file does.
* ``model``: the whole configuration gathered into addresses with their sources.
* ``validrcptto``: the one implementation of the validrcptto.cdb lookup order.
"""
