"""The session record's bytes before sealing: JWTs as raw bytes, the rest compressed together.

A session holds two or three JWTs (access, refresh, ID token, route tokens). As text they are base64url, a third
larger than their bytes, and their signatures (256 random bytes each for RS256) do not compress at all; their
headers and claims repeat one another (issuer, subject, sid, scope, key id). So every string value of the record that
is a JWS in compact form (three base64url segments that decode and re-encode to exactly themselves) is taken apart:

    0x03 | varint n | deflate(zdict)(JSON of the record with each JWT as {"\\u0000": i}, "\\u0000",
                                       lengths, the JWTs' headers and payloads) [n bytes] | the signatures, raw

The JSON part is field-agnostic: whatever the ``Session`` dataclass holds is packed as it is (new fields need no
change here). A record whose values cannot be packed so (a dict with the placeholder key) is written in the older
form, which ``unpack`` still reads: zlib-compressed JSON (it starts with 0x78, never 0x02 or 0x03). Records of version
2 (before the preset dictionary knew browsers' User-Agents, which the record keeps for the list of sessions since)
are read with their own dictionary.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from typing import Any

VERSION = 3
EARLIER_VERSION = 2  # what an earlier release reads (bff.sessions writes it until BFF_COMPACT_STORE is true)
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MARK = "\x00"  # the placeholder's key: no JSON the BFF writes has it, and a record that does is kept as text
# A preset dictionary for deflate: what small records and JWTs repeat, so that even the first occurrence is cheap.
# Part of the format: changing it needs a new VERSION.
ZDICT = (
    b'{"alg":"RS256","kid":"","typ":"at+jwt"}{"alg":"ES256","typ":"JWT"}{"alg":"EdDSA","typ":"rt+jwt"}'
    b'{"iss":"https://","sub":"","aud":"","exp":17,"iat":17,"nbf":17,"jti":"","client_id":"","scope":"openid profile '
    b'email offline_access","sid":"","acr":"","amr":["pwd","mfa","otp"],"auth_time":17,"nonce":"","azp":"",'
    b'"preferred_username":"","email":"","email_verified":true,"name":"","groups":[],"roles":[],"at_hash":"",'
    b'"cnf":{"jkt":""},"resource":""}'
    b'{"access_token":"","refresh_token":"","access_expires_at":17,"sub":"","username":"","scope":"openid",'
    b'"created_at":17,"expires_at":17,"access_issued_at":17,"tokens":{},"id_token":"","sid":"","claims":{},'
    b'"acr":"","auth_time":17,"amr":[],"last_seen":17,"user_agent":"","ip":"'
)
# Version 3: the templates of today's browsers' User-Agent strings first (Chromium's reduced User-Agent is one of a few
# fixed forms with only the major version in it; Safari's and Firefox's are as fixed), then version 2's dictionary.
USER_AGENTS = (
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 "
    b"Mobile/15E148 Safari/604.1 Mozilla/5.0 (X11; Linux x86_64; rv:) Gecko/20100101 Firefox/.0 "
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/ "
    b"Safari/605.1.15 "
    b"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/.0.0.0 Mobile Safari/537.36 "
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/.0.0.0 Safari/537.36 "
    b"Edg/"
    b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/.0.0.0 Safari/537.36"
)
ZDICTS = {2: ZDICT, 3: USER_AGENTS + ZDICT}


def _b64decode(segment: str) -> bytes | None:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    # Only a canonical encoding is taken apart: it must come back exactly as it was sent.
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == segment else None


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class _Unpackable(Exception):
    pass


def _split(value: Any, jwts: list[tuple[bytes, bytes, bytes]]) -> Any:
    if isinstance(value, str):
        if len(value) > 40 and _JWS.fullmatch(value):
            parts = [_b64decode(p) for p in value.split(".")]
            if all(p is not None for p in parts):
                jwts.append((parts[0], parts[1], parts[2]))  # type: ignore[arg-type]
                return {_MARK: len(jwts) - 1}
        return value
    if isinstance(value, dict):
        if _MARK in value:
            raise _Unpackable
        return {k: _split(v, jwts) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split(v, jwts) for v in value]
    return value


def _join(value: Any, jwts: list[str]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _MARK in value:
            return jwts[value[_MARK]]
        return {k: _join(v, jwts) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, jwts) for v in value]
    return value


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[at]
        at += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, at
        shift += 7
        if shift > 35:
            raise ValueError("varint too long")


def pack(data: dict[str, Any], version: int = VERSION) -> bytes:
    """The record's bytes (see the module docstring), in ``version`` (2: the dictionary of earlier releases)."""
    jwts: list[tuple[bytes, bytes, bytes]] = []
    try:
        skeleton = _split(data, jwts)
    except _Unpackable:
        return zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 9)
    lengths = [[len(h), len(p), len(s)] for h, p, s in jwts]
    text = json.dumps([skeleton, lengths], separators=(",", ":")).encode()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, ZDICTS[version])
    body = text + b"\x00" + b"".join(h + p for h, p, _ in jwts)
    compressed = deflate.compress(body) + deflate.flush()
    return bytes([version]) + _varint(len(compressed)) + compressed + b"".join(s for _, _, s in jwts)


def unpack(plain: bytes) -> Any:
    """The record packed by ``pack`` (or in the older zlib-compressed JSON form). Raises ValueError or zlib.error
    for anything else."""
    if not plain:
        raise ValueError("empty record")
    zdict = ZDICTS.get(plain[0])
    if zdict is None:
        return json.loads(zlib.decompress(plain))  # the older form
    size, at = _read_varint(plain, 1)
    inflate = zlib.decompressobj(-15, zdict)
    body = inflate.decompress(plain[at : at + size]) + inflate.flush()
    signatures = memoryview(plain)[at + size :]
    text, _, rest = body.partition(b"\x00")
    skeleton, lengths = json.loads(text)
    jwts: list[str] = []
    head = sig = 0
    for h, p, s in lengths:
        header, payload = rest[head : head + h], rest[head + h : head + h + p]
        signature = bytes(signatures[sig : sig + s])
        if len(header) != h or len(payload) != p or len(signature) != s:
            raise ValueError("truncated record")
        head, sig = head + h + p, sig + s
        jwts.append(f"{_b64encode(header)}.{_b64encode(payload)}.{_b64encode(signature)}")
    return _join(skeleton, jwts)
