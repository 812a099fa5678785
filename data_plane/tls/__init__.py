"""TLS termination building blocks: per-certificate SSL contexts, the SNI certificate table, the fallback."""
