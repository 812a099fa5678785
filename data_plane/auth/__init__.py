"""Bearer-token checks for protected proxies, as sans-IO building blocks: values in, decisions out.

token_verifier (local JWT verification against a cached JWKS), access_policy (per-proxy rules compiled
from the stored config), protected_resource (RFC 9728 documents and WWW-Authenticate), mcp_headers
(Mcp-Method / Mcp-Name against the JSON-RPC body), auth_table / revocations (the snapshots the runtime
holds) and gate (one request's decision, composed from all of the above). None of them does I/O or reads
the clock.
"""
