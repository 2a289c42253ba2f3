"""Detection: what a port's data exposure looks like once hits and transfers meet.

``findings`` joins sensitive-data hits with transfers (message-borne, flow-borne, zone policy)
into one row per exposure; ``severity`` is the declarative model that ranks them.  The watchlist,
DNS attribution, zone policy and egress modules are to move in here later (DESIGN.md).
"""
