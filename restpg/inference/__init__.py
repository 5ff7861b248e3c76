"""restpg.inference: Model loading, precision per device, sampling with a shared prefix, packed weights, vLLM. Layers: docs/architecture.md."""
