"""The contract between the control plane and the data plane.

Everything both planes must agree on lives here: settings, Redis key names, stored models, the change-event
schema and the Redis client factory. Neither plane spells a Redis key itself.
"""
