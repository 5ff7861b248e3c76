"""restpg's own errors. Every error restpg raises on purpose (bad input, a missing model, a run
that cannot go on) is a :class:`RestpgError` whose message names what and where; the page turns
exactly these into messages. Anything else is a bug and shows as one."""

from __future__ import annotations


class RestpgError(Exception):
    """An error restpg raises on purpose; the message names the culprit."""


class InputError(RestpgError, ValueError):
    """A value the user gave is out of range or malformed."""


PAGE_ERRORS = (RestpgError,)
