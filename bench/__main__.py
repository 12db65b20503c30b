"""`python -m bench`: run every benchmark and print the figures as JSON."""

from __future__ import annotations

import json

from bench import build, containers, dockerfiles, files, images, isolation, monitor, networks, operations, streams

if __name__ == "__main__":
    print(json.dumps({"containers": containers.run(), "build": build.run(), "streams": streams.run(),
                      "networks": networks.run(), "isolation": isolation.run(), "dockerfiles": dockerfiles.run(),
                      "images": images.run(), "monitor": monitor.run(), "files": files.run(),
                      "operations": operations.run()}, indent=2))
