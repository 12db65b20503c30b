"""Per-layer progress of pulls and pushes: rich bars on a terminal, one line per change otherwise.

kleened sends a `PullProgress` TEXT frame (`{"type":"progress","layer":...,"status":...,"current":N,
"total":M}`) per layer state change; any other TEXT frame is printed as it is.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

from klee.printing import Output

QUIET_STATUSES = ("Downloading", "Pushing", "Extracting")  # plain mode prints these once per layer


class LayerProgress:
    def __init__(self, out: Output) -> None:
        self.out = out
        self._last: dict[str, str] = {}
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> LayerProgress:
        if self.out.fancy:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("{task.fields[layer]}"), TextColumn("{task.description:<16}"),
                                      BarColumn(), DownloadColumn(), console=Console(file=self.out.stream),
                                      transient=False)
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def frame(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            return
        try:
            event = json.loads(frame) if frame.startswith('{"type":"progress"') else None
        except ValueError:
            event = None
        if event is None:
            self.out.line(frame.rstrip("\n"))
            return
        layer, status = str(event.get("layer", "")), str(event.get("status", ""))
        current, total = int(event.get("current") or 0), int(event.get("total") or 0)
        if self._progress is not None:
            self._bar(layer, status, current, total)
        elif self._last.get(layer) != status:
            self._last[layer] = status
            self.out.line(f"{layer}: {status}")

    def _bar(self, layer: str, status: str, current: int, total: int) -> None:
        task = self._tasks.get(layer)
        if task is None:
            task = self._tasks[layer] = self._progress.add_task(status, layer=layer, total=total or None)
        done = status in ("Pull complete", "Already exists", "Pushed", "Layer already exists", "Mounted")
        self._progress.update(task, description=status, completed=total if done else current, total=total or None)
