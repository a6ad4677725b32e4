"""Serve the CommCare emulator in its own process: `python -m emulators.commcare --owners a,b`.

Prints one JSON line with base_url, project, username and api_key, then serves until killed.
"""

import argparse
import json

from emulators import serve_until_interrupted

from .server import CommCareEmulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--owners", default="", help="comma-separated owner ids CommCare knows")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with CommCareEmulator(owners={o for o in args.owners.split(",") if o}, port=args.port) as hq:
        print(json.dumps({"base_url": hq.base_url, "project": hq.domain, "username": hq.username,
                          "api_key": hq.api_key}), flush=True)
        serve_until_interrupted()


if __name__ == "__main__":
    main()
