"""Python function calls per request of the hot path, in-process: a count, not a timing.

Run by `bench.hot_path --baseline` once per checkout (PYTHONPATH picks which): it builds
the app from the environment (the production profile the servers use), sends `--warm`
requests, then counts every Python and C function call of `--requests` more with
`sys.setprofile`. Two checkouts of the same route differ only by what the change added
to the path, whatever the machine is doing meanwhile. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

from myapp import create_app


def main() -> int:
    """Count, print, exit 0 (1 when a request is not answered 200)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--route", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--warm", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    client = create_app().test_client()
    headers = {"Authorization": f"Bearer {args.token}"}
    for _ in range(args.warm):
        if client.get(args.route, headers=headers).status_code != 200:
            return 1
    calls = 0

    def count(_frame: object, event: str, _arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    statuses = [client.get(args.route, headers=headers).status_code for _ in range(args.requests)]
    sys.setprofile(None)
    json.dump({"calls_per_request": calls / args.requests, "ok": statuses.count(200)}, sys.stdout)
    return 0 if statuses.count(200) == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
