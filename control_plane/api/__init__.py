"""HTTP routers of the management API. Thin: parse, authenticate, call a service, shape the response."""
