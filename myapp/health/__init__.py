"""Health: liveness, readiness (with drain after SIGTERM) and a detailed dependency report."""
