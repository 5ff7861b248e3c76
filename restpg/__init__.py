"""restpg: REST-PG (Salemi et al., 2025) for personalized long-form generation on LongLaMP."""

__version__ = "0.1.0"
