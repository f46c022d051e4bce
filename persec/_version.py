"""The package version (a leaf: the CLI and the exporter read it without importing the package API)."""

__version__ = "0.1.0"
