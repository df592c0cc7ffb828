"""The package version (one place: the package root, pyproject.toml and the Hub user agent
read it)."""
__version__ = "0.1.0"
