"""Detection: where sensitive data goes, and what a port's data exposure looks like.

* :mod:`.watchlist` — sourced indicators of external platforms (LOGINK first) and their matching;
* :mod:`.dnsmap` — DNS answers, so flows to an address are attributed to the name that resolved to it;
* :mod:`.zones` — the zone policy (OT, crane, scanner zones; remote-access and OT protocols);
* :mod:`.egress` — the ``transfers`` dataset: flows and messages that reach a watchlisted
  platform or break zone policy;
* :mod:`.flowpath` — the stream's path for NetFlow/IPFIX, goflow2 and DNS topics;
* :mod:`.findings` — joins hits with transfers (message-borne, flow-borne, zone policy) into one
  row per exposure; :mod:`.severity` is the declarative model that ranks them, :mod:`.inventory`
  the application inventory of the zone policy, :mod:`.windows` the stream's event-time windows.

Sensitive values themselves (the ``hits``) come from the kernels through
:class:`flowaudit.pipeline.Classifier`.
"""
