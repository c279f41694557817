"""Auth: passwords, login sessions, JWT access/refresh tokens with rotation, permissions."""
