"""Which names the page answers to: a guard against DNS rebinding.

A web page on another site can point a name of its own at 127.0.0.1 and then send requests to the
app from the visitor's browser, as if it were the app's own page (the browser only sees the same
name twice). Those requests carry that foreign name in their ``Host`` header. The app answers only
requests whose Host is

- an IP address (a rebinding attack needs a name; an address is what was dialled),
- ``localhost`` or a name under ``.localhost``,
- the name the app was started on (``--host``), or a name given with ``--allowed-host`` (the
  machine's name, or a reverse proxy's public name; ``*.example.org`` allows its subdomains).

Everything else gets 403 with the reason, as Jupyter's server does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import RestpgError


class HostError(RestpgError, ValueError):
    """An --allowed-host value that is not a host name."""


def host_name(header: str) -> str:
    """The name of a Host header, without its port, lower case: ``[::1]:7860`` -> ``::1``."""
    value = header.strip().lower()
    if value.startswith("["):  # an IPv6 literal, maybe with a port
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class AllowedHosts:
    """The names besides addresses and localhost the app answers to."""

    names: frozenset[str] = frozenset()

    @classmethod
    def for_server(cls, bind: str, extra: list[str] | tuple[str, ...] = ()) -> AllowedHosts:
        """The bind address's name (when it is one) and the ``--allowed-host`` values, checked."""
        names = set()
        for value in [bind, *extra]:
            name = host_name(value)
            rest = name[2:] if name.startswith("*.") else name  # *.example.org: its subdomains
            if not rest or any(c in rest for c in "*/ \t@?#") or any(c in value for c in "/@?#"):
                raise HostError(
                    f"--allowed-host {value!r}: expected a host name such as lab.example.org or *.example.org"
                )
            if not _is_address(name):
                names.add(name)
        return cls(frozenset(names))

    def allows(self, header: str | None) -> bool:
        if not header:
            return False
        name = host_name(header)
        if _is_address(name) or name == "localhost" or name.endswith(".localhost") or name in self.names:
            return True
        return any(pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in self.names)


class HostCheck:
    """ASGI middleware: requests (and websockets) whose Host the app was not started for are refused."""

    def __init__(self, app, allowed: AllowedHosts):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            header = headers.get(b"host", b"").decode("latin-1")
            if not self.allowed.allows(header):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = (
                    f"restpg: requests for host {host_name(header) or '(none)'!r} are refused (a guard against DNS "
                    "rebinding); start the app with --allowed-host NAME to serve that name\n"
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
