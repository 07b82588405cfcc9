"""Request paths that must never reach an upstream: dot segments, in every spelling someone behind may read.

A server or proxy behind the BFF may resolve dot segments (RFC 3986 §5.2.4) after decoding the path once or twice
(``%2e%2e``, ``%252e%252e``), read an encoded slash as a slash (``..%2f``), read ``;`` as the start of path
parameters (Tomcat reads ``..;`` as ``..``), read ``\\`` as ``/`` (IIS, several Java servers), stop at a NUL, decode
IIS's ``%u002e`` or an overlong UTF-8 ``%c0%ae`` as a dot. So the BFF decodes as far as anyone might, reads
backslashes as slashes, cuts path parameters, and refuses a segment that is then ``.`` or ``..``, any control
character, ``%uXXXX``, and anything that is not UTF-8 once decoded (overlong forms included).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

MAX_DECODES = 4  # rounds of percent-decoding; a path still encoded after them is refused
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]|%[uU][0-9a-fA-F]{4}")  # and IIS's %uXXXX
_DOTS = re.compile(rb"[.\s]*\.[.\s]*")  # ".", "..", "...", ". .": Windows trims trailing dots and spaces


def climbs(raw_path: bytes) -> bool:
    """Whether ``raw_path`` (as sent, percent-encoded) holds a dot segment or a control character in any spelling."""
    if b"." not in raw_path and b"%" not in raw_path:
        return False  # the hot path: no dot can appear, and the raw path has no control characters (HTTP/1.1)
    path = raw_path
    for _ in range(MAX_DECODES):
        if b"%" not in path:
            break
        decoded = unquote_to_bytes(path)
        if decoded == path:
            break
        path = decoded
    else:
        if b"%" in path and unquote_to_bytes(path) != path:
            return True  # encoded deeper than anyone decodes it: nothing legitimate looks like this
    if _CONTROL.search(path):
        return True
    try:
        path.decode("utf-8")  # strict: refuses overlong forms (%c0%ae is a dot to some old decoders)
    except UnicodeDecodeError:
        return True
    return any(_DOTS.fullmatch(segment.split(b";", 1)[0]) for segment in path.replace(b"\\", b"/").split(b"/"))
