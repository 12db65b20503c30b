"""The WebSocket framing shared by exec, build and image-create streams.

A stream opens with a JSON `WebSocketMessage` of type "starting", carries raw output frames,
and ends with a close frame whose reason is a JSON `WebSocketMessage`. A close payload is at
most 125 bytes, two of which are the code, so the JSON reason must fit 123 bytes of UTF-8:
`close_reason` shortens the message (never the JSON) until it fits.
"""

from __future__ import annotations

from typing import Literal

import msgspec

MsgType = Literal["starting", "closing", "error"]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # upstream: exec started detached
CLOSE_PROTOCOL_ERROR = 1002  # invalid config, before the starting message
CLOSE_INTERNAL_ERROR = 1011

MAX_CLOSE_REASON = 123


class WebSocketMessage(msgspec.Struct, kw_only=True):
    msg_type: MsgType
    message: str = ""
    data: str = ""


_encoder = msgspec.json.Encoder()


def encode_message(msg_type: MsgType, message: str = "", data: str = "") -> str:
    return _encoder.encode(WebSocketMessage(msg_type=msg_type, message=message, data=data)).decode()


def starting(data: str = "") -> str:
    return encode_message("starting", "", data)


def close_reason(msg_type: MsgType, message: str, data: str = "") -> str:
    """A JSON WebSocketMessage that fits a close frame (<= 123 bytes of UTF-8).

    Characters are dropped from the end of `message` first; `data` is kept whole (it carries
    ids and snapshot names that clients act on) unless it alone is too long.
    """
    text = encode_message(msg_type, message, data)
    if len(text.encode()) <= MAX_CLOSE_REASON:
        return text
    lo, hi = 0, len(message)
    while lo < hi:  # longest prefix of message that fits
        mid = (lo + hi + 1) // 2
        if len(encode_message(msg_type, message[:mid], data).encode()) <= MAX_CLOSE_REASON:
            lo = mid
        else:
            hi = mid - 1
    text = encode_message(msg_type, message[:lo], data)
    if len(text.encode()) <= MAX_CLOSE_REASON:
        return text
    return close_reason(msg_type, message, data[: max(0, len(data) - 8)])


def decode_close_reason(reason: str) -> WebSocketMessage:
    return msgspec.json.decode(reason, type=WebSocketMessage)


class WindowSize(msgspec.Struct, kw_only=True, tag_field="type", tag="resize"):
    """Extension: a client -> server TEXT frame that resizes the session's terminal.

    Sent as `{"type": "resize", "rows": R, "cols": C}`. Only frames that decode as exactly this
    object are taken as resizes; everything else is stdin.
    """

    rows: int
    cols: int
