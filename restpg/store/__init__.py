"""restpg.store: The SQLite store and what it keeps: generations, ratings, arena votes, E-step samples, calibration, exports. Layers: docs/architecture.md."""
