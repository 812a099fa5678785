"""Services: the rules of each resource kind. No FastAPI imports; they read and plan writes via the store."""
