"""The local dev loop behind `just up` / `just down`: env-file generation, the process supervisor, helpers."""
