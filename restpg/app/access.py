"""Who may do what on the page.

- The page binds to loopback unless told otherwise. Binding to any other address without
  ``--auth`` is refused unless the user passes ``--public-without-auth``, and then it warns: anyone
  who can reach the port could start training jobs and write ratings under any name.
- ``--auth user:password`` (repeatable, or a file of such lines) turns on Gradio's login; the
  annotator of a rating or a vote is then the login name, never a typed one.
- ``--trainers a,b`` limits starting and cancelling training jobs to those login names.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import RestpgError
from ..store.ratings import MAX_ANNOTATOR_CHARS

ANNOTATOR_PATTERN = re.compile(rf"[\w .@-]{{1,{MAX_ANNOTATOR_CHARS}}}")
LOOPBACK_NAMES = ("localhost",)


class AccessError(RestpgError, PermissionError):
    """Something the page's settings or the user's login do not allow."""


def parse_credentials(values: list[str] | None, auth_file: str | Path | None = None) -> list[tuple[str, str]]:
    """``user:password`` pairs from the command line and from a file (one per line, # comments);
    a malformed pair or a user named twice is an AccessError naming it (never the password)."""
    pairs: list[tuple[str, str]] = [(value, "--auth") for value in values or []]
    if auth_file is not None:
        path = Path(auth_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise AccessError(f"--auth-file {str(path)!r}: {error.strerror or error}") from None
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                pairs.append((line.strip(), f"{path}:{number}"))
    credentials, seen = [], set()
    for value, where in pairs:
        user, sep, password = value.partition(":")
        user = user.strip()
        if not sep or not user or not password:
            raise AccessError(f"{where}: expected user:password, got {user or '(nothing)'}:***")
        if not ANNOTATOR_PATTERN.fullmatch(user):
            raise AccessError(f"{where}: user {user!r}: use at most 64 letters, digits, spaces, '.', '@', '_' or '-'")
        if user in seen:
            raise AccessError(f"{where}: user {user!r} is given twice")
        seen.add(user)
        credentials.append((user, password))
    return credentials


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, authenticated: bool, public_without_auth: bool) -> str | None:
    """None when binding is fine; a warning to print when it is allowed but open; AccessError when refused."""
    if is_loopback(host) or authenticated:
        return None
    if not public_without_auth:
        raise AccessError(
            f"--host {host}: binding to an address other than loopback without --auth would let anyone "
            "who reaches the port start training jobs and write ratings; add --auth user:password, or "
            "--public-without-auth if that is what you want"
        )
    return (
        f"WARNING: the page listens on {host} without a login (--public-without-auth): anyone who reaches "
        "the port can start training jobs and write ratings under any name"
    )


@dataclass(frozen=True)
class AccessPolicy:
    """The page's rules: whether logins are on, and who may start or cancel training jobs."""

    authenticated: bool = False
    trainers: frozenset[str] | None = None  # None: everyone who can open the page

    def __post_init__(self) -> None:
        if self.trainers is not None and not self.authenticated:
            raise AccessError("--trainers needs --auth: without logins there is no name to check")

    @staticmethod
    def login(request) -> str | None:
        """The logged-in user of a Gradio request, or None without auth."""
        return getattr(request, "username", None) if request is not None else None

    def annotator(self, typed: str | None, request=None) -> str:
        """Who a rating or vote is by: the login name when auth is on, else the typed name (checked)."""
        login = self.login(request)
        if self.authenticated:
            if not login:
                raise AccessError("log in first: ratings and votes are saved under your login name")
            return login
        name = (typed or "").strip()
        if not name:
            raise AccessError("enter your annotator name first")
        if not ANNOTATOR_PATTERN.fullmatch(name):
            raise AccessError(f"annotator {name!r}: use at most 64 letters, digits, spaces, '.', '@', '_' or '-'")
        return name

    def vetoers(self, request=None) -> str | None:
        """Whose own rating vetoes an E-step sample in a job started by this request: the trainers
        (else the logged-in starter); None without logins, where a veto needs a quorum of raters."""
        names = set(self.trainers or ()) | ({self.login(request)} if self.login(request) else set())
        return ",".join(sorted(names)) or None

    def may_train(self, request=None) -> bool:
        """Whether this user may start and cancel jobs, read their logs and configs and export every
        rating (everyone when --trainers is not given)."""
        return self.trainers is None or self.login(request) in self.trainers

    def check_trainer(self, request=None) -> None:
        """AccessError unless this user may start and cancel training jobs."""
        if self.trainers is None:
            return
        login = self.login(request)
        if login not in self.trainers:
            raise AccessError(
                f"{login or 'this user'} may not start or cancel training jobs; allowed: {', '.join(sorted(self.trainers))}"
            )
