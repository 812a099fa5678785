"""The OAuth 2.1 authorization server, laid out one module per RFC (like authlib).

metadata (RFC 8414), signing + JWKS (RFC 7517/7638) with the key ring in Redis (key_ring), registration
(RFC 7591/7592), authorization (RFC 6749 §4.1 with RFC 7636 PKCE, RFC 9207 iss, RFC 8707 resource),
remembered consent (consent, and the user's consents page), upstream GitHub login,
token endpoint (codes, refresh rotation), introspection (RFC 7662), revocation (RFC 7009) and the device
flow (RFC 8628). No module here imports FastAPI: api/oauth.py is the HTTP boundary.
"""
