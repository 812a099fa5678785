"""ACME (RFC 8555) issuance and renewal over HTTP-01, driven by a Redis Streams workflow.

lock.py (per-domain Redis lease), accounts.py (account per directory + email, key encrypted), order.py (one
ACME order, blocking calls off the event loop), certificate_info.py (keys, CSRs, parsing chains),
issuer.py (the pending -> active | failed state machine with re-check under lock and retry backoff),
workflow.py (the "certificate wanted" stream and its consumer group), scheduler.py (renewal and retry scans),
worker.py (the background task the app lifespan runs).
"""
