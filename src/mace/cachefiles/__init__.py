"""The cache files, pure: bytes in, records out (no OpenCL). Formats, the stores they live in, the service that
reads and saves them once per engine."""
