"""The model: the typed graph (ir.py), its file (modelfile.py), the op rules every layer shares (rules.py)."""
