"""The page answers only to addresses, localhost and the names it was started for (DNS rebinding)."""

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from restpg.app.hosts import AllowedHosts, HostCheck, HostError, host_name


def test_host_names_lose_their_port_and_case():
    assert host_name("LocalHost:7860") == "localhost"
    assert host_name("[::1]:7860") == "::1" and host_name("::1") == "::1"
    assert host_name("lab.example.org.") == "lab.example.org"


def test_addresses_localhost_and_named_hosts_are_allowed_and_nothing_else():
    allowed = AllowedHosts.for_server("0.0.0.0", ["lab.example.org", "*.proxy.example.net"])
    for header in ("127.0.0.1:7860", "10.1.2.3", "[::1]:7860", "localhost:7860", "app.localhost", "LAB.example.org"):
        assert allowed.allows(header), header
    assert allowed.allows("a.proxy.example.net")
    for header in (
        "rebind.evil.example",
        "evil.example:7860",
        "proxy.example.net.evil",
        "",
        None,
        "lab.example.org.evil",
    ):
        assert not allowed.allows(header), header
    assert AllowedHosts.for_server("myhost").allows("myhost:7860")  # the name it was started on


@pytest.mark.parametrize("bad", ["", "a b", "http://x/", "*", "a.*.org"])
def test_a_bad_allowed_host_is_named(bad):
    with pytest.raises(HostError, match="--allowed-host"):
        AllowedHosts.for_server("127.0.0.1", [bad])


def test_the_middleware_refuses_a_foreign_host_with_the_reason():
    app = Starlette(
        routes=[Route("/", lambda request: PlainTextResponse("page"))],
        middleware=[Middleware(HostCheck, allowed=AllowedHosts.for_server("127.0.0.1"))],
    )
    client = TestClient(app, base_url="http://127.0.0.1:7860")
    assert client.get("/").text == "page"
    refused = client.get("/", headers={"host": "rebind.evil.example"})
    assert refused.status_code == 403 and "rebind.evil.example" in refused.text and "--allowed-host" in refused.text
