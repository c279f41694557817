"""Audit log: who did what to which object, written in the same transaction as the change."""
