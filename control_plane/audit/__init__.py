"""Audit trails kept in Redis streams, longer than request logs: who changed what through the management API
(changes.py, recorded inside the write's own transaction), and what happened at the OAuth authorization
server (oauth_events.py). Secrets never reach an entry (masking.py). Both are searchable, newest first, with
cursor pagination (streams.py)."""
