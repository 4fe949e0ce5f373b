"""Runtimes that execute an IR graph, and the Engine that picks one by device name (registry.py)."""
