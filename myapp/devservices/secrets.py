"""Random secrets for local development, written once to `.env.local` (never committed).

The application has no built-in secret, not even for local use: a constant in the code
would sign tokens that anybody who read the code could forge. `make dev` (and `make
migrate`, `make seed`) run this once per checkout; the settings read `.env.local` after
`.env`, and real environment variables win over both.

    python -m myapp.devservices.secrets .env.local
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from pathlib import Path


def generate() -> dict[str, str]:
    """Fresh values for every secret setting."""

    def key() -> str:
        return base64.b64encode(secrets.token_bytes(32)).decode()

    return {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "ENCRYPTION_KEYS": f"local1:{key()}",
        "BLIND_INDEX_KEY": key(),
    }


def write_once(path: Path) -> bool:
    """Create `path` (mode 0600) with fresh secrets; False when it exists already."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    lines = [
        "# Local secrets, generated for this checkout only. Never commit this file.",
        *(f"{name}={value}" for name, value in generate().items()),
    ]
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(lines) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m myapp.devservices.secrets PATH`: write PATH unless it exists."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else ".env.local")
    created = write_once(path)
    sys.stderr.write(f"{'wrote' if created else 'kept'} local secrets in {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
