"""Helpers that start REAL services on loopback for tests (no mocks): see services.py."""
