"""Every Redis key, channel and stream name, built in one place.

All configuration keys share the hash tag `{mhp}` so that a MULTI/EXEC touching several of them runs on one
Redis Cluster slot. High-volume streams (request log) use their own tag so they can live on another slot.

Layout (collections are hashes: field = object id, value = the model's JSON; this gives atomic snapshots and
lookups without SCAN):
    {mhp}:tokens                 hash  token name   -> ApiToken JSON
    {mhp}:token-hashes           hash  sha256 hex   -> token name
    {mhp}:token-zones            hash  DNS zone     -> ZoneDelegation JSON (zone delegated to a token)
    {mhp}:proxies                hash  hostname     -> ProxyTarget JSON
    {mhp}:routes                 hash  route id     -> Route JSON
    {mhp}:config-version         int   bumped by every routing/TLS/auth change
    {mhp}:changes                stream of ChangeEvent entries (bounded)
    {mhp}:changes:wake           pub/sub channel; message = new config version
    {mhp-log}:requests           stream of request-log entries (bounded)
    {mhp}:audit:changes          stream of change-audit entries (bounded by age and count)
    {mhp}:audit:oauth            stream of OAuth audit events (bounded by age and count)
"""

from __future__ import annotations

TAG = "{mhp}"
LOG_TAG = "{mhp-log}"


def tokens() -> str:
    return f"{TAG}:tokens"


def token_hashes() -> str:
    return f"{TAG}:token-hashes"


def token_zones() -> str:
    """Hash: DNS zone -> ZoneDelegation JSON (which token the admin delegated it to); kept with the tokens."""
    return f"{TAG}:token-zones"


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


def audit_changes_stream() -> str:
    """Stream of change-audit entries; in the config hash tag: it is written in the config MULTI/EXEC."""
    return f"{TAG}:audit:changes"


def audit_oauth_stream() -> str:
    """Stream of OAuth audit events (sign-ins, consents, tokens, refusals)."""
    return f"{TAG}:audit:oauth"


def audit_rate_limited(client_address: str) -> str:
    """String with a TTL: a rate-limit refusal of this client was audited this minute."""
    return f"{TAG}:audit:rate-limited:{client_address}"


def all_config_keys() -> tuple[str, ...]:
    """Keys the data plane reads to build its route table, in one transaction."""
    return (config_version(), proxies(), routes())


# ---- Certificates (ACME) ----
#   {mhp}:certificates              hash  cert name -> Certificate JSON (writes bump the config version)
#   {mhp}:certificate-domains       hash  domain    -> cert name (a domain belongs to at most one certificate)
#   {mhp}:acme-accounts             hash  account id (sha256 of directory URL + email) -> AcmeAccount JSON
#   {mhp}:acme-challenge:<token>    string key-authorisation for HTTP-01, with a TTL
#   {mhp}:acme-lock:<domain>        string lock owner id, SET NX PX (lease renewed while issuing)
#   {mhp}:acme-scheduler-lock:<kind> string one replica's renewal (or retry) scan per interval
#   {mhp}:acme-workflow             stream "certificate wanted" events, consumed by ACME_WORKFLOW_GROUP
#   {mhp}:fallback-certificate      string FallbackCertificate JSON (self-signed, shared by every replica)

ACME_WORKFLOW_GROUP = "acme-workers"


def certificates() -> str:
    return f"{TAG}:certificates"


def certificate_domains() -> str:
    return f"{TAG}:certificate-domains"


def acme_accounts() -> str:
    return f"{TAG}:acme-accounts"


def acme_challenge(token: str) -> str:
    return f"{TAG}:acme-challenge:{token}"


def acme_lock(domain: str) -> str:
    return f"{TAG}:acme-lock:{domain}"


def acme_scheduler_lock(kind: str) -> str:
    return f"{TAG}:acme-scheduler-lock:{kind}"


def acme_workflow_stream() -> str:
    return f"{TAG}:acme-workflow"


def acme_workflow_group() -> str:
    return ACME_WORKFLOW_GROUP


def fallback_certificate() -> str:
    return f"{TAG}:fallback-certificate"


def certificate_snapshot_keys() -> tuple[str, ...]:
    """Keys the data plane reads to build its certificate table, in one transaction."""
    return (config_version(), certificates(), fallback_certificate())


# ---- OAuth authorization server and protected resources (issue 5)
# Per-proxy auth config and PRM fields are config (written with the config-write transaction, kind "auth"):
#     {mhp}:proxy-auth             hash  hostname -> ProxyAuthConfig JSON
#     {mhp}:proxy-resources        hash  hostname -> ProxyResource JSON
# OAuth protocol state is not config: short-lived string keys with TTLs, never part of a snapshot:
#     {mhp}:oauth:client:<client_id>           OAuthClient JSON (TTL renewed on use)
#     {mhp}:oauth:authreq:<id>                 pending /authorize request (minutes)
#     {mhp}:oauth:upstream:<sha256 of state>   upstream (GitHub) login state, single-use (minutes)
#     {mhp}:oauth:code:<sha256>                authorization code, single-use (seconds)
#     {mhp}:oauth:code-used:<sha256>           grant family a redeemed code issued (replay detection)
#     {mhp}:oauth:grant:<family>               OAuthGrant JSON: who, which client, scope, audience
#     {mhp}:oauth:grant-jtis:<family>          zset access-token jti -> exp issued in that family
#     {mhp}:oauth:refresh:<sha256>             RefreshRecord JSON
#     {mhp}:oauth:consents:<login>             hash consent id -> OAuthConsent JSON: what the user approved
#                                              (client, scope set, resource set), each with its own expiry;
#                                              the key lives as long as its latest record
#     {mhp}:oauth:consent-logins               set of logins that have consent records (admin listings)
#     {mhp}:oauth:device:<sha256>              device-flow login in progress
#     {mhp}:oauth:revoked-jtis                 zset jti -> token exp; data planes load it and refuse those
#     {mhp}:oauth:revocations                  pub/sub channel; message = "<jti> <exp>" of a revoked token
#     {mhp}:oauth:jwks                         JWKS JSON of the issuer (data planes cache it)
#     {mhp}:oauth:signing-keys                 OAuthSigningKeyRing JSON: every token-signing key (private
#                                              half encrypted with the KEK), which one signs, when each
#                                              retires. Written only with the JWKS, in the config-write
#                                              transaction (kind "auth"), so a rotation wakes data planes.
#     {mhp}:oauth:cimd:<sha256 of URL>         a fetched Client ID Metadata Document, as OAuthClient JSON


def proxy_auth() -> str:
    return f"{TAG}:proxy-auth"


def proxy_resources() -> str:
    return f"{TAG}:proxy-resources"


def auth_config_keys() -> tuple[str, ...]:
    """Hashes a data plane reads (with all_config_keys(), in one MULTI): which proxies are protected."""
    return (proxy_auth(), proxy_resources())


def oauth_client(client_id: str) -> str:
    return f"{TAG}:oauth:client:{client_id}"


def oauth_preregistered_clients() -> str:
    """Hash: client_id -> OAuthClient JSON, for clients the admin registered (they never expire)."""
    return f"{TAG}:oauth:preregistered-clients"


def oauth_authorization_request(request_id: str) -> str:
    return f"{TAG}:oauth:authreq:{request_id}"


def oauth_upstream_state(state_sha256: str) -> str:
    return f"{TAG}:oauth:upstream:{state_sha256}"


def oauth_code(code_sha256: str) -> str:
    return f"{TAG}:oauth:code:{code_sha256}"


def oauth_code_used(code_sha256: str) -> str:
    return f"{TAG}:oauth:code-used:{code_sha256}"


def oauth_grant(family_id: str) -> str:
    return f"{TAG}:oauth:grant:{family_id}"


def oauth_grant_jtis(family_id: str) -> str:
    return f"{TAG}:oauth:grant-jtis:{family_id}"


def oauth_refresh_token(token_sha256: str) -> str:
    return f"{TAG}:oauth:refresh:{token_sha256}"


def oauth_consents(login: str) -> str:
    return f"{TAG}:oauth:consents:{login}"


def oauth_consent_logins() -> str:
    return f"{TAG}:oauth:consent-logins"


def oauth_device_login(device_code_sha256: str) -> str:
    return f"{TAG}:oauth:device:{device_code_sha256}"


def oauth_revoked_jtis() -> str:
    return f"{TAG}:oauth:revoked-jtis"


def oauth_revocations_channel() -> str:
    return f"{TAG}:oauth:revocations"


def oauth_jwks() -> str:
    return f"{TAG}:oauth:jwks"


def oauth_signing_keys() -> str:
    return f"{TAG}:oauth:signing-keys"


def oauth_client_metadata_document(url_sha256: str) -> str:
    return f"{TAG}:oauth:cimd:{url_sha256}"


# ---- Edge protections of the control plane
#     {mhp-rl:<client>}:<bucket>:<window>   int   requests of one client (IPv4, or IPv6 /64) in one fixed
#                                                 window; two consecutive windows estimate a sliding one.
# Own hash tag per client: the two counters a check reads share a slot, and clients spread over a cluster.


def rate_limit(bucket: str, client: str, window_index: int) -> str:
    return f"{{mhp-rl:{client}}}:{bucket}:{window_index}"


# ---- Docker-managed services, external services and host ports (issue 11)
#     {mhp}:services               hash  service name -> ServiceRecord JSON (desired state: spec, owner,
#                                        generation; control plane only; written with the config transaction)
#     {mhp}:service-status         hash  service name -> ServiceStatus JSON (observed state, written by the
#                                        controller outside the config transaction: it routes nothing)
#     {mhp}:service-endpoints      hash  service name -> ServiceEndpoint JSON: where `service://NAME` targets
#                                        go (external URLs, and managed services' container addresses).
#                                        Config: the data plane reads it with the route table.
#     {mhp}:ports                  hash  "<protocol>/<port>" -> PortAllocation JSON (allocated by a Lua
#                                        script, atomic across replicas)
#     {mhp}:service-workflow       stream "look at service NAME" events, consumed by SERVICE_WORKFLOW_GROUP
#     {mhp}:service-lock:<name>    string lease of the controller replica converging that service
#     {mhp}:service-events-leader  string lease of the one replica that follows the engine's event stream
#     {mhp}:service-reconcile-lock string one replica's full reconcile per interval
#     {mhp}:deployment-id          string random id of this deployment (SET NX), put on every container as a
#                                        label, so that two deployments sharing an engine never touch each
#                                        other's containers

SERVICE_WORKFLOW_GROUP = "service-controllers"


def services() -> str:
    return f"{TAG}:services"


def service_status() -> str:
    return f"{TAG}:service-status"


def service_endpoints() -> str:
    return f"{TAG}:service-endpoints"


def ports() -> str:
    return f"{TAG}:ports"


def port_field(protocol: str, port: int) -> str:
    """Field of one allocation in ports(): `tcp/20001`."""
    return f"{protocol}/{port}"


def service_workflow_stream() -> str:
    return f"{TAG}:service-workflow"


def service_workflow_group() -> str:
    return SERVICE_WORKFLOW_GROUP


def service_lock(name: str) -> str:
    return f"{TAG}:service-lock:{name}"


def service_events_leader() -> str:
    return f"{TAG}:service-events-leader"


def service_reconcile_lock() -> str:
    return f"{TAG}:service-reconcile-lock"


def deployment_id() -> str:
    return f"{TAG}:deployment-id"


# ---- Workflow failures and dead letters (issue 12), per workflow stream (acme-workflow, service-workflow)
#     <stream>:failures            hash  stream entry id -> WorkflowFailure JSON: the last error of an event
#                                        whose handler raised; the event stays pending and is delivered again
#     <stream>:dead                stream events given up on after WORKFLOW_MAX_DELIVERIES deliveries (or
#                                        malformed): the event's fields as JSON, its original id, last error


def workflow_failures(stream: str) -> str:
    return f"{stream}:failures"


def workflow_dead_letters(stream: str) -> str:
    return f"{stream}:dead"


# ---- Request-log indexes and aggregates (issue 12). All under LOG_TAG with the stream, so the indexer's
# Lua script touches the stream's indexes and aggregates in one slot, atomically.
#     {mhp-log}:requests                      stream written by the data plane, read by LOG_INDEX_GROUP
#     {mhp-log}:ix:<dimension>:<value>        zset  stream id -> ms of the id: entries of one proxy host
#                                             (`host`), client IP (`ip`), user (`user`), OAuth client
#                                             (`client`), MCP tool (`tool`), status class
#                                             (`class`, only 4xx and 5xx), host and class (`hclass`, value
#                                             `<host>:5xx`), upstream failure (`err`, value "1")
#     {mhp-log}:ix-keys                       set   every index key (what the trimmer walks)
#     {mhp-log}:rid:<hour>:<shard>            hash  request id -> stream id, per UTC hour and request-id shard
#     {mhp-log}:agg:<m|h>:<host>:<bucket>     hash  counters of one proxy in one minute/hour bucket
#     {mhp-log}:uip:<m|h>:<host>:<bucket>     HLL   client IPs of that bucket
#     {mhp-log}:uus:<m|h>:<host>:<bucket>     HLL   users of that bucket
#     {mhp-log}:top:<path|user|tool>:<m|h>:<host>:<bucket>   zset value -> count (kept to LOG_TOP_KEEP)
#     {mhp-log}:agg-all:<m|h>:<bucket>        hash  the same counters over every proxy together (the indexer
#     {mhp-log}:uip-all:<m|h>:<bucket>        HLL   adds each entry to its proxy's bucket and to these, so
#     {mhp-log}:uus-all:<m|h>:<bucket>        HLL   stats over all proxies read one key per bucket, not one
#     {mhp-log}:top-all:<path|user|tool>:<m|h>:<bucket>   zset  per proxy and bucket)
#     {mhp-log}:agg-hosts:<m|h>:<bucket>      set   hosts with traffic in that bucket (admin-wide stats)
#     {mhp-log}:stats-scratch                 HLL   a stats script's scratch union (deleted by that script)
#     {mhp-log}:trim-lock                     string one replica's retention pass per interval
# Bucket numbers are Unix minutes / hours (UTC). Every aggregate key carries a TTL (its retention).

LOG_INDEX_GROUP = "log-indexers"


def request_log_index_group() -> str:
    return LOG_INDEX_GROUP


def log_index(dimension: str, value: str) -> str:
    return f"{LOG_TAG}:ix:{dimension}:{value}"


def log_index_keys() -> str:
    return f"{LOG_TAG}:ix-keys"


# Request ids of an hour are spread over this many small hashes so each stays within Redis's listpack
# encoding (hash-max-listpack-entries, 128 by default) up to ~2.5M entries a day: about 40 bytes an entry
# instead of ~95 in one big hash. The indexer's Lua script computes the same shard.
REQUEST_ID_SHARDS = 1024


def request_id_shard(request_id: str) -> int:
    number = 0
    for byte in request_id.encode():
        number = (number * 31 + byte) % REQUEST_ID_SHARDS
    return number


def log_request_ids(hour: int, request_id: str) -> str:
    return f"{LOG_TAG}:rid:{hour}:{request_id_shard(request_id)}"


def log_request_ids_unsharded(hour: int) -> str:
    """One hash per hour, as indexers before the shards wrote it (read until it expires)."""
    return f"{LOG_TAG}:rid:{hour}"


def log_aggregate(granularity: str, host: str, bucket: int) -> str:
    return f"{LOG_TAG}:agg:{granularity}:{host}:{bucket}"


def log_unique_ips(granularity: str, host: str, bucket: int) -> str:
    return f"{LOG_TAG}:uip:{granularity}:{host}:{bucket}"


def log_unique_users(granularity: str, host: str, bucket: int) -> str:
    return f"{LOG_TAG}:uus:{granularity}:{host}:{bucket}"


def log_top(dimension: str, granularity: str, host: str, bucket: int) -> str:
    return f"{LOG_TAG}:top:{dimension}:{granularity}:{host}:{bucket}"


def log_aggregate_all(granularity: str, bucket: int) -> str:
    return f"{LOG_TAG}:agg-all:{granularity}:{bucket}"


def log_unique_ips_all(granularity: str, bucket: int) -> str:
    return f"{LOG_TAG}:uip-all:{granularity}:{bucket}"


def log_unique_users_all(granularity: str, bucket: int) -> str:
    return f"{LOG_TAG}:uus-all:{granularity}:{bucket}"


def log_top_all(dimension: str, granularity: str, bucket: int) -> str:
    return f"{LOG_TAG}:top-all:{dimension}:{granularity}:{bucket}"


def log_stats_scratch() -> str:
    """Scratch HyperLogLog of a stats union too large for one PFCOUNT (made and deleted in one script)."""
    return f"{LOG_TAG}:stats-scratch"


def log_aggregate_hosts(granularity: str, bucket: int) -> str:
    return f"{LOG_TAG}:agg-hosts:{granularity}:{bucket}"


def log_trim_lock() -> str:
    return f"{LOG_TAG}:trim-lock"
