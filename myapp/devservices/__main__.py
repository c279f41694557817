"""Entry point of ``python -m myapp.devservices``; see the package docstring for usage.

It also runs by path, as ``python myapp/devservices ARGS`` (like the former
``python myapp/devservices.py``): the repository root then replaces this directory on
``sys.path`` and the package is imported as usual.
"""

from __future__ import annotations

import sys

if __package__:
    from .cli import main
else:  # run by path: sys.path[0] is this directory, where redis.py would shadow redis
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from myapp.devservices.cli import main

if __name__ == "__main__":
    sys.exit(main())
