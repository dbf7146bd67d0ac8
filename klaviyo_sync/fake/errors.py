"""JSON:API error bodies as Klaviyo sends them (shared/klaviyo-api.md section 7)."""

from __future__ import annotations

import uuid

from .data import dumps


class ApiError(Exception):
    def __init__(self, status: int, code: str, title: str, detail: str,
                 source: dict | None = None, headers: list | None = None,
                 links: dict | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.source = source if source is not None else {"pointer": "/data/"}
        self.headers = headers or []
        self.links = links

    def body(self) -> bytes:
        return error_body(self.status, self.code, self.title, self.detail, self.source,
                          self.links)


def error_body(status, code, title, detail, source=None, links=None) -> bytes:
    err = {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "source": source if source is not None else {"pointer": "/data/"},
    }
    if links is not None:
        err["links"] = links
    err["meta"] = {}
    return dumps({"errors": [err]}).encode("utf-8")


def bad(detail: str, parameter: str | None = None, pointer: str | None = None) -> ApiError:
    if parameter is not None:
        source = {"parameter": parameter}
    else:
        source = {"pointer": pointer or "/data/"}
    return ApiError(400, "invalid", "Invalid input.", detail, source)


def not_found(detail="Not found.") -> ApiError:
    return ApiError(404, "not_found", "Not found.", detail, {"pointer": "/data/"})
