"""Helpers shared by tests (test-only routes, subprocess servers)."""
