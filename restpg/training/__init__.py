"""restpg.training: Reasoning paths, fine-tuning, the EM loop, human selection, shipped versions. Layers: docs/architecture.md."""
