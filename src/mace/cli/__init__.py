"""The `mace` command line."""
