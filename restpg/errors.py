"""The errors a page action turns into a message in the page instead of a crash."""

from __future__ import annotations

from .hardware import PrecisionError
from .jobs import JobError
from .longlamp import DatasetError
from .models import ModelError
from .prompts import PromptTooLongError
from .ratings import RatingError

PAGE_ERRORS = (
    DatasetError,
    ModelError,
    PromptTooLongError,
    RatingError,
    JobError,
    PrecisionError,
    ValueError,
    KeyError,
    OSError,
)
