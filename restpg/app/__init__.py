"""restpg.app: The Gradio page: its service, one module per tab, access, hosts, links, background jobs, serving, shipping. Layers: docs/architecture.md."""
