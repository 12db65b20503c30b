"""`python -m bench`: run every benchmark and print the figures as JSON."""

from __future__ import annotations

import json

from bench import containers

if __name__ == "__main__":
    print(json.dumps({"containers": containers.run()}, indent=2))
