"""Who may do what: logins, the bind rule, trainers, annotator names."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from restpg.app.access import AccessError, AccessPolicy, check_bind, is_loopback, parse_credentials

ROOT = Path(__file__).resolve().parents[2]


def test_credentials_from_flags_and_a_file(tmp_path):
    file = tmp_path / "users.txt"
    file.write_text("# raters\ncarol:pw3\n\n dave:p:w \n")
    assert parse_credentials(["ann:pw1", "bob:pw2"], file) == [
        ("ann", "pw1"),
        ("bob", "pw2"),
        ("carol", "pw3"),
        ("dave", "p:w"),
    ]
    with pytest.raises(AccessError, match="users.txt:2") as error:
        file.write_text("ok:1\nbroken-line-secret\n")
        parse_credentials([], file)
    assert "secret" not in str(error.value).split("got ")[0]
    with pytest.raises(AccessError, match="given twice"):
        parse_credentials(["ann:a", "ann:b"])
    with pytest.raises(AccessError, match=r"--auth: expected user:password, got ann:\*\*\*"):
        parse_credentials(["ann:"])
    with pytest.raises(AccessError, match="nowhere.txt"):
        parse_credentials([], tmp_path / "nowhere.txt")
    assert parse_credentials(None) == []


def test_binding_beyond_loopback_needs_auth_or_an_explicit_flag():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    assert check_bind("127.0.0.1", False, False) is None
    assert check_bind("0.0.0.0", True, False) is None
    with pytest.raises(AccessError, match="--auth"):
        check_bind("0.0.0.0", False, False)
    assert "WARNING" in check_bind("0.0.0.0", False, True)


def test_the_app_refuses_a_public_address_without_auth():
    result = subprocess.run(
        [sys.executable, "demo_app.py", "--host", "0.0.0.0", "--port", "7999"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--public-without-auth" in result.stderr
    result = subprocess.run(
        [sys.executable, "demo_app.py", "--trainers", "ann"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "--trainers needs --auth" in result.stderr


def test_the_annotator_is_the_login_when_auth_is_on():
    open_page = AccessPolicy()
    assert open_page.annotator(" kim ", None) == "kim"
    with pytest.raises(AccessError, match="annotator name"):
        open_page.annotator("  ", None)
    with pytest.raises(AccessError, match="letters"):
        open_page.annotator("<b>kim</b>", None)
    logged = AccessPolicy(authenticated=True)
    assert logged.annotator("someone else", SimpleNamespace(username="ann")) == "ann"
    with pytest.raises(AccessError, match="log in"):
        logged.annotator("ann", SimpleNamespace(username=None))


def test_only_named_trainers_start_and_cancel_jobs():
    policy = AccessPolicy(authenticated=True, trainers=frozenset({"ann"}))
    policy.check_trainer(SimpleNamespace(username="ann"))
    with pytest.raises(AccessError, match="bob may not start or cancel training jobs; allowed: ann"):
        policy.check_trainer(SimpleNamespace(username="bob"))
    AccessPolicy(authenticated=True).check_trainer(SimpleNamespace(username="bob"))  # no list: everyone
    with pytest.raises(AccessError, match="needs --auth"):
        AccessPolicy(trainers=frozenset({"ann"}))
