"""The control plane: management API (FastAPI), and later OAuth, ACME and services.

It writes only to Redis, and only through `control_plane.store`; the data plane picks changes up from there.
"""
