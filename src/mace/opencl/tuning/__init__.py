"""Tuning on the device: kernel variants per node (variants.py), local sizes per launch (local_sizes.py), and the
tuned-parameters file as the engine uses it (params.py)."""
