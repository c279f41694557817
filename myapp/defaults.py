"""Where PostgreSQL and Redis are looked for when `DATABASE_URL` / `REDIS_URL` are unset.

Written once, here, and read by the settings and by the dev-only embedded servers (which
must not import the app or its dependencies, hence a module of its own).
"""

DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/myapp"
REDIS_URL = "redis://127.0.0.1:6379/0"
