"""Runtimes that execute an IR graph. The engine picks one by device name (see backends.py)."""
