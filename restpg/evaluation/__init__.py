"""restpg.evaluation: Metrics, the reward and judge, evaluation, the six-method comparison, results for the page. Layers: docs/architecture.md."""
