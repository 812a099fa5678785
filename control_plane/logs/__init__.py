"""The request log in the control plane: the indexer (a consumer group on the data plane's stream), search,
stats, live tail and retention. See README "Observability" and shared/keys.py for the Redis layout."""
