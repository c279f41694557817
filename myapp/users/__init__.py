"""Users: accounts, roles, profile, soft delete, the users API."""
