"""The OpenAPI 3.1 document of the Kleene API, generated from the Structs in `models`.

`ROUTES` is the single list of operations; schemas come from msgspec, so the document cannot
drift from what the daemon decodes and encodes. WebSocket endpoints are listed as GET with an
`x-websocket` description of their frames.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import msgspec

from . import API_VERSION, models, operations
from .websocket import WebSocketMessage, WindowSize


class Route(NamedTuple):
    method: str
    path: str
    summary: str
    body: type | None = None
    responses: tuple[tuple[int, Any], ...] = ()
    query: tuple[tuple[str, str, bool], ...] = ()  # name, type, required
    websocket: str = ""


E = models.ErrorResponse
I = models.IdResponse  # noqa: E741
IDS = list[str]

ROUTES: list[Route] = [
    Route("get", "/containers/list", "List containers", None, ((200, list[models.ContainerSummary]),),
          (("all", "boolean", False),)),
    Route("post", "/containers/create", "Create a container", models.ContainerConfig, ((201, I), (404, E))),
    Route("delete", "/containers/{container_id}", "Remove a container (volumes=true: and the anonymous volumes "
          "its image's VOLUMEs made, extension)", None, ((200, I), (404, E), (409, E)),
          (("volumes", "boolean", False),)),
    Route("post", "/containers/prune", "Remove stopped, non-persistent containers", None, ((200, IDS),)),
    Route("post", "/containers/{container_id}/update", "Update a container (absent or null: unchanged)",
          models.ContainerUpdate, ((201, I), (404, E), (409, E))),
    Route("post", "/containers/{container_id}/stop", "Stop a container", None, ((200, I), (404, E))),
    Route("get", "/containers/{container_id}/inspect", "Inspect a container", None,
          ((200, models.ContainerInspect), (404, E))),
    Route("post", "/exec/create", "Create an execution instance", models.ExecConfig,
          ((201, I), (400, E), (404, E))),
    Route("get", "/exec/start", "Start an execution instance (WebSocket)", models.ExecStartConfig, (),
          websocket="First client frame: ExecStartConfig. Server: starting message, output frames, close frame "
          "with a JSON WebSocketMessage reason (1000 exited, 1001 detached, 1002 bad config, 1011 error). "
          "Client frames after start are stdin; a TEXT frame that is exactly a WindowSize object resizes the TTY."),
    Route("post", "/exec/{exec_id}/stop", "Stop an execution instance", None, ((200, I), (404, E)),
          (("force_stop", "boolean", True), ("stop_container", "boolean", True))),
    Route("post", "/build/prune", "Remove the RUN cache mounts no build uses (extension)", None,
          ((200, models.BuildPrune),)),
    Route("get", "/images/build", "Build an image (WebSocket)", models.ImageBuildConfig, (),
          websocket="First client frame: ImageBuildConfig. With `context_upload` (extension) the client then sends "
          "the build context as a tar stream (plain, gzip, xz, bzip2 or zstd) in BINARY frames of at most 1 MiB, "
          "ended by an empty BINARY frame or the TEXT frame {\"type\":\"context-end\"}; `context` is then ignored "
          "and .dockerignore is applied by the daemon too. Server: starting message (data: image id), TEXT frames "
          "only: 'Step n/N : <line>' and process output (both omitted when quiet), '--> Using cache' (cache hits, "
          "extension), '--> Snapshot created: @<12hex>' after every RUN, COPY and ADD (always), other '--> ' "
          "notes, error lines; close 1000 'image created' (data: the image id: the build's, or an identical "
          "existing image's) or 1011 'image build failed' (data: the last snapshot, 'no snapshots "
          "available', or '' when nothing was kept). A Dockerfile that cannot be processed: starting message with "
          "data '', the error text, close 1011 'failed to process Dockerfile'. An upload that cannot be received or "
          "unpacked: starting message with data '', 'error: <reason>', close 1011 'failed to receive the build "
          "context'. Invalid config: close 1002. A client that disconnects cancels the build; everything it made is "
          "removed."),
    Route("get", "/images/create", "Create a base image (WebSocket)", models.ImageCreateConfig, (),
          websocket="First client frame: ImageCreateConfig. Server: starting message, TEXT progress frames, "
          "close 1000 'image created' (data: image id) or 1011 'image creation failed: ...'."),
    Route("get", "/images/list", "List images", None, ((200, list[models.Image]),)),
    Route("delete", "/images/{image_id}", "Remove an image", None, ((200, I), (404, E))),
    Route("post", "/images/prune", "Remove unused images", None, ((200, IDS),), (("all", "boolean", True),)),
    Route("post", "/images/{image_id}/tag", "Tag an image", None, ((200, I), (404, E)),
          (("nametag", "string", True),)),
    Route("get", "/images/{image_id}/inspect", "Inspect an image", None, ((200, models.Image), (404, E))),
    Route("get", "/images/pull", "Pull an image from a registry (WebSocket, extension)", models.ImagePullConfig, (),
          websocket="First client frame: ImagePullConfig. Server: starting message, a PullProgress TEXT frame per "
          "layer change, close 1000 'image pulled' (data: image id), or the reason as a TEXT frame and close 1011 "
          "'image pull failed: <reason>'. A client that disconnects cancels the pull; its layers are removed."),
    Route("get", "/images/push", "Push an image to a registry (WebSocket, extension)", models.ImagePushConfig, (),
          websocket="First client frame: ImagePushConfig. Server: starting message, PullProgress TEXT frames, "
          "close 1000 'image pushed' (data: the manifest digest's hex) or 1011 'image push failed: <reason>'."),
    Route("get", "/images/save", "Save images as an OCI archive (WebSocket, extension)", models.ImageSaveConfig, (),
          websocket="First client frame: ImageSaveConfig. Server: starting message, the tar archive in BINARY frames "
          "(at most 256 KiB each), close 1000 'image saved' or 1011 'image save failed: <reason>'."),
    Route("get", "/images/load", "Load images from an archive (WebSocket, extension)", models.ImageLoadConfig, (),
          websocket="First client frame: ImageLoadConfig, then the archive (OCI layout or docker save tar, plain or "
          "gzip) in BINARY frames ended by an empty one. Server: starting message, TEXT lines per layer and "
          "'Loaded image: <name:tag> (<id>)' per image, close 1000 'images loaded' (data: the ids, comma-separated, "
          "when they fit) or 1011 'image load failed: <reason>'."),
    Route("post", "/registries/login", "Check registry credentials (extension)", models.RegistryLogin,
          ((200, I), (400, E))),
    Route("get", "/networks/list", "List networks", None, ((200, list[models.Network]),)),
    Route("post", "/networks/create", "Create a network", models.NetworkConfig, ((201, I), (409, E))),
    Route("delete", "/networks/{network_id}", "Remove a network", None, ((200, I), (404, E))),
    Route("post", "/networks/prune", "Remove unused networks", None, ((200, IDS),)),
    Route("get", "/networks/{network_id}/inspect", "Inspect a network", None,
          ((200, models.NetworkInspect), (404, E))),
    Route("post", "/networks/connect", "Connect a container to a network", models.EndPointConfig,
          ((204, None), (404, E), (409, E))),
    Route("post", "/networks/{network_id}/disconnect/{container_id}", "Disconnect a container", None,
          ((204, None), (404, E), (409, E))),
    Route("get", "/volumes/list", "List volumes", None, ((200, list[models.Volume]),)),
    Route("post", "/volumes/create", "Create a volume (idempotent)", models.VolumeConfig, ((201, I), (400, E))),
    Route("delete", "/volumes/{volume_name}", "Remove a volume", None, ((200, I), (404, E), (409, E))),
    Route("post", "/volumes/prune", "Remove unused volumes", None, ((200, IDS),)),
    Route("get", "/volumes/{volume_name}/inspect", "Inspect a volume", None, ((200, models.VolumeInspect), (404, E))),
    Route("get", "/containers/{container_id}/attach", "Attach to a running container's main process "
          "(WebSocket, extension)", models.AttachConfig, (),
          websocket="First client frame: AttachConfig. Server: starting message (data 'tty' when the process has "
          "a terminal), the recent lines asked for, then live output as BINARY frames (with multiplex: a leading "
          "stream byte, 1 stdout, 2 stderr). Client frames are stdin (minus the detach keys); an exact WindowSize "
          "TEXT frame resizes the terminal. Close 1000 'container <id> exited with exit-code N' or 'detached from "
          "container <id>'; 1011 'reader too slow: dropped' (fell attach_buffer bytes behind) or 'error attaching "
          "to container' (data: why); 1002 bad config."),
    Route("get", "/containers/{container_id}/logs", "Read or follow a container's log, running or stopped "
          "(WebSocket, extension)", models.LogsConfig, (),
          websocket="First client frame: LogsConfig. Server: starting message, then BINARY frames, each one stream "
          "byte (1 stdout, 2 stderr) and output (with timestamps, each line starts with its RFC 3339 stamp and a "
          "space). Close 1000 'end of log' (a follower: once the container's run ended and every line was sent); "
          "1011 'reader too slow: log rotated away'; 1002 'invalid parameters: ...' (unknown container too)."),
    Route("get", "/events", "Stream state changes (WebSocket, extension)", models.EventsConfig, (),
          websocket="First client frame: EventsConfig. Server: starting message, then one TEXT frame per Event "
          "(JSON), the retained history since `since` first. Close 1000 'end of events' once `until` passed; "
          "1011 'reader too slow: dropped' (fell events_buffer events behind); 1002 bad filters or times."),
    Route("get", "/containers/stats", "Stream resource usage of running containers (WebSocket, extension)",
          models.StatsConfig, (),
          websocket="First client frame: StatsConfig. Server: starting message, then one TEXT frame per interval, "
          "a StatsSample (JSON) of every sampled running container. Close 1000 'end of stats' (after one sample "
          "without `stream`, or once every named container stopped); 1002 'invalid parameters: ...' (an unknown "
          "container, an interval outside 0.1 to 60 seconds)."),
    Route("get", "/containers/{container_id}/top", "Processes of a running container (extension)", None,
          ((200, models.ContainerTop), (404, E), (409, E))),
    Route("post", "/containers/{container_id}/commit", "Make an image of a stopped container's filesystem "
          "(extension)", operations.ContainerCommitConfig, ((201, I), (400, E), (404, E), (409, E))),
    Route("get", "/containers/{container_id}/archive/stat", "What is at a path of a container (extension)", None,
          ((200, operations.PathStat), (404, E), (409, E)),
          (("path", "string", True), ("follow_link", "boolean", False))),
    Route("get", "/containers/{container_id}/archive/get", "Read a path of a container as a tar stream (WebSocket, "
          "extension)", operations.ArchiveGetConfig, (),
          websocket="First client frame: ArchiveGetConfig. Server: starting message (data: the PathStat as JSON), "
          "BINARY frames of an uncompressed tar whose top entry is named after the path's last component, close "
          "1000 'archive sent'. Before the starting message a failure closes 1002 with its reason, after it 1011."),
    Route("get", "/containers/{container_id}/archive/put", "Extract a tar stream into a directory of a container "
          "(WebSocket, extension)", operations.ArchivePutConfig, (),
          websocket="First client frame: ArchivePutConfig. Server: starting message; the client then sends an "
          "uncompressed (or gzip, bzip2, xz) tar in BINARY frames ended by an empty BINARY frame or the TEXT frame "
          "{\"type\":\"context-end\"}. Close 1000 'archive extracted' (data: ArchivePutResult JSON); 1002 "
          "before the starting message (no such container, ...), 1011 after it (no such directory, a hostile "
          "archive, cp_max_bytes or cp_max_entries exceeded)."),
    Route("get", "/system/info", "Versions, drivers, host, counts, state root and listeners (extension)", None,
          ((200, operations.SystemInfo),)),
    Route("get", "/system/df", "Disk space per image, container and volume, and the build cache (extension)", None,
          ((200, operations.DiskUsage),)),
    Route("post", "/system/prune", "Remove stopped containers, unused networks, dangling (or, with all, unused) "
          "images and, with volumes, unused volumes (extension)", operations.SystemPruneConfig,
          ((200, operations.SystemPruneResult),)),
    Route("get", "/version", "Daemon and API version (extension)", None, ((200, models.Version),)),
    Route("get", "/openapi.json", "This document (extension)", None, ((200, dict),)),
]


def _ref_name(t: type) -> str:
    return t.__name__


@functools.cache
def openapi_document() -> dict[str, Any]:
    types = {r.body for r in ROUTES if r.body} | {t for r in ROUTES for _, t in r.responses if t not in (None, dict)}
    types |= {WebSocketMessage, WindowSize, models.Event}
    ordered = sorted(types, key=repr)
    schemas, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    by_type = dict(zip(ordered, schemas, strict=True))
    paths: dict[str, Any] = {}
    for route in ROUTES:
        op: dict[str, Any] = {"summary": route.summary, "responses": {}}
        params = [{"name": n, "in": "query", "required": req, "schema": {"type": t}} for n, t, req in route.query]
        params += [
            {"name": seg[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for seg in route.path.split("/")
            if seg.startswith("{")
        ]
        if params:
            op["parameters"] = params
        if route.websocket:
            op["x-websocket"] = {"description": route.websocket, "first-frame": by_type[route.body]}
            op["responses"]["101"] = {"description": "Switching to the WebSocket protocol"}
        elif route.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": by_type[route.body]}}}
        for status, type_ in (*route.responses, *_edge_responses(route)):
            entry: dict[str, Any] = {"description": "" if type_ is None else _describe(type_)}
            if type_ is not None:
                schema = {"type": "object"} if type_ is dict else by_type[type_]
                entry["content"] = {"application/json": {"schema": schema}}
            op["responses"][str(status)] = entry
        paths.setdefault(route.path, {})[route.method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kleene daemon API", "version": API_VERSION},
        "paths": paths,
        "components": {"schemas": components},
    }


def _edge_responses(route: Route) -> tuple[tuple[int, Any], ...]:
    """What any route with a body or query may answer before it runs: 422 (the body or a query
    parameter does not decode: `{"message", "errors"}`) and 413 (a body over `max_request_body`)."""
    if route.websocket:
        return ()
    edge: list[tuple[int, Any]] = []
    if route.body is not None or route.query:
        edge.append((422, E))
    if route.body is not None:
        edge.append((413, E))
    return tuple(edge)


def _describe(type_: Any) -> str:
    return getattr(type_, "__name__", None) or str(type_)
