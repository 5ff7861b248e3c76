"""restpg.data: LongLaMP records, BM25 retrieval over a profile, the paper's prompts, the sample's paths. Layers: docs/architecture.md."""
