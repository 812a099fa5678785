"""Edge protections of the control plane's HTTP listener, as pure ASGI middleware in front of every route:
who the client is (client_address), how much body it may send (body_limit), how often (rate_limit)."""
