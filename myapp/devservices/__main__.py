"""Entry point of ``python -m myapp.devservices``; see the package docstring for usage.

It also runs by path, as ``python myapp/devservices ARGS`` (like the former
``python myapp/devservices.py``): the package is then imported as the top-level
``devservices`` from ``myapp/``, so ``myapp`` itself is not imported.
"""

from __future__ import annotations

import sys

if __package__:
    from .cli import main
else:  # run by path: sys.path[0] is this directory, where redis.py would shadow redis
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from devservices.cli import main

if __name__ == "__main__":
    sys.exit(main())
