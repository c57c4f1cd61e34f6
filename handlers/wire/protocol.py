"""Which wire a request uses: the project's JSON API or the Open Inference Protocol (v2).

TorchServe 0.12 routes `/v2/models/<name>/infer` (and `/v1/models/<name>:predict`)
to the handler with the raw body and every HTTP header, adding only `explain`
(`True` on the `explain` routes); `/predictions/<name>` adds `url_path` as well.
Nothing else tells the routes apart, so on a KServe route the body decides.
"""

from __future__ import annotations

from collections.abc import Mapping

JSON, V2 = "json", "v2"
HEADER_LENGTH = "inference-header-content-length"  # header names arrive lower-cased
# A JSON API body never has these keys, a v2 body starts with one (tritonclient: "inputs").
_V2_KEYS = ("inputs", "outputs", "parameters", "id")
_V2_STARTS = tuple(f'"{k}"'.encode() for k in _V2_KEYS)


def wire_protocol(headers: Mapping[str, str], body) -> str:
    """JSON or V2 for one request, from the headers TorchServe passes and the body.

    `url_path` => `/predictions` (JSON API); no `explain` => not a KServe route
    (JSON API). On a KServe route: `explain: True`, the binary extension's
    header or a JSON object whose first key is a v2 key => V2; else the JSON
    API, whose `{"instances": ...}` is KServe v1's shape.
    """
    if "url_path" in headers or "explain" not in headers:
        return JSON
    if headers["explain"] != "False" or HEADER_LENGTH in headers:
        return V2
    if isinstance(body, dict):
        return V2 if any(k in body for k in _V2_KEYS) else JSON
    if isinstance(body, str):
        body = body[:64].encode("utf-8", "replace")
    if not isinstance(body, bytes | bytearray):
        return JSON
    head = bytes(body[:64]).lstrip()
    if not head.startswith(b"{"):
        return JSON
    return V2 if head[1:].lstrip().startswith(_V2_STARTS) else JSON
