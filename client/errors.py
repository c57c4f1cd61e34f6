"""The client's one exception type, `LatentServeError`, and its input-side subclass."""

from __future__ import annotations

import json


class LatentServeError(Exception):
    """Any failed call: an HTTP error answer, or no answer after the retries.

    `status` is the HTTP status (None when no answer came), `code` the server's
    machine-readable reason (the JSON API's `error.code`, or TorchServe's
    exception `type`, e.g. ModelNotFoundException; the Open Inference Protocol's
    errors have none), `field` the offending JSON API field when the server
    names one (a protocol error names its tensor or parameter in the message),
    `message` the server's own message, `url` the endpoint and `attempts` how
    many times it was tried.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        url: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.message, self.status, self.code, self.field = message, status, code, field
        self.url, self.attempts = url, attempts
        super().__init__(self._describe())

    def _describe(self) -> str:
        if self.url is None:
            return self.message
        head = f"HTTP {self.status}" if self.status is not None else "no answer"
        if self.code:
            head += f" {self.code}"
        if self.field and self.field != "body":
            head += f" at {self.field}"
        tries = f", {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{head}: {self.message} [{self.url}{tries}]"

    @classmethod
    def from_response(cls, status: int, body: bytes, url: str, attempts: int) -> LatentServeError:
        """Read latentserve's JSON API {"error": {...}}, the Open Inference Protocol's
        {"error": "..."}, or TorchServe's {"code", "type", "message"}."""
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        common = {"status": status, "url": url, "attempts": attempts}
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            err = doc["error"]
            return cls(
                str(err.get("message", "")), code=err.get("code"), field=err.get("field"), **common
            )
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return cls(doc["error"], **common)
        if isinstance(doc, dict) and "message" in doc:
            return cls(str(doc["message"]), code=doc.get("type"), **common)
        text = body.decode("utf-8", "replace").strip()[:500] or "(empty body)"
        return cls(text, **common)


class InputError(LatentServeError, ValueError):
    """An input the client cannot turn into a request (raised before anything is sent)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="client_input")
