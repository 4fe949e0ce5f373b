"""The engine version: part of every device fingerprint, so a new mace version never loads an older one's binaries."""

__version__ = "0.1.0"
