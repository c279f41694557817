"""Feature flags: targeting by user, role and percentage; changes reach every process fast."""
