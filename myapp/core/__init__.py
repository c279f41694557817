"""Cross-cutting platform code. It knows no domain and imports none."""
