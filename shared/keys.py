"""Every Redis key, channel and stream name, built in one place.

All configuration keys share the hash tag `{mhp}` so that a MULTI/EXEC touching several of them runs on one
Redis Cluster slot. High-volume streams (request log) use their own tag so they can live on another slot.

Layout (collections are hashes: field = object id, value = the model's JSON; this gives atomic snapshots and
lookups without SCAN):
    {mhp}:tokens                 hash  token name   -> ApiToken JSON
    {mhp}:token-hashes           hash  sha256 hex   -> token name
    {mhp}:proxies                hash  hostname     -> ProxyTarget JSON
    {mhp}:routes                 hash  route id     -> Route JSON
    {mhp}:config-version         int   bumped by every routing/TLS/auth change
    {mhp}:changes                stream of ChangeEvent entries (bounded)
    {mhp}:changes:wake           pub/sub channel; message = new config version
    {mhp-log}:requests           stream of request-log entries (bounded)
"""

from __future__ import annotations

TAG = "{mhp}"
LOG_TAG = "{mhp-log}"


def tokens() -> str:
    return f"{TAG}:tokens"


def token_hashes() -> str:
    return f"{TAG}:token-hashes"


def proxies() -> str:
    return f"{TAG}:proxies"


def routes() -> str:
    return f"{TAG}:routes"


def config_version() -> str:
    return f"{TAG}:config-version"


def changes_stream() -> str:
    return f"{TAG}:changes"


def changes_channel() -> str:
    return f"{TAG}:changes:wake"


def request_log_stream() -> str:
    return f"{LOG_TAG}:requests"


def all_config_keys() -> tuple[str, ...]:
    """Keys the data plane reads to build its route table, in one transaction."""
    return (config_version(), proxies(), routes())
