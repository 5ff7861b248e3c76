"""restpg's own errors: one base class, and the page turns only those into messages."""

import importlib
import inspect
import pkgutil

import pytest

import restpg
from restpg.errors import PAGE_ERRORS, InputError, RestpgError


def test_every_error_restpg_defines_is_a_restpg_error():
    errors = {}
    for module in pkgutil.walk_packages(restpg.__path__, "restpg."):
        if module.name == "restpg.__main__":
            continue
        loaded = importlib.import_module(module.name)
        for name, value in inspect.getmembers(loaded, inspect.isclass):
            if value.__module__ == loaded.__name__ and issubclass(value, Exception) and name != "Cancelled":
                errors[name] = value
    assert {"DatasetError", "ModelError", "RunError", "RatingError", "JobError", "PromptTooLongError"} <= set(errors)
    assert [name for name, error in errors.items() if not issubclass(error, RestpgError)] == []
    assert PAGE_ERRORS == (RestpgError,)  # ValueError, KeyError, OSError from elsewhere are bugs, shown as bugs
    assert issubclass(InputError, ValueError)


def test_an_unknown_generation_names_its_id(tmp_path):
    from restpg.store.database import Store
    from restpg.store.generations import GenerationStore, UnknownGenerationError

    with pytest.raises(UnknownGenerationError) as raised:
        GenerationStore(Store(tmp_path / "s.db")).get("nope-1")
    assert str(raised.value) == "no generation 'nope-1'" and isinstance(raised.value, KeyError)
