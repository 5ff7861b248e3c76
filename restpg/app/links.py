"""Links that open one item of the page again: ``?generation=<id>`` (Explore) and ``?rate=<id>`` (Rate)."""

from __future__ import annotations

from urllib.parse import quote


def page_link(request, **params) -> str:
    """The page's address with ``params`` as its query, from the browser's request (its host, and
    the scheme and host a proxy forwarded)."""
    headers = dict(getattr(request, "headers", None) or {}) if request is not None else {}
    host = headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1:7860"
    scheme = headers.get("x-forwarded-proto") or "http"
    query = "&".join(f"{name}={quote(str(value), safe='')}" for name, value in params.items())
    return f"{scheme}://{host}/?{query}"
