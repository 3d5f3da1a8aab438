"""Errors shared across metareward, in a module that imports nothing heavy (so code that
must run before JAX starts, :mod:`metareward.distributed`, can raise them)."""


class ConfigError(ValueError):
    """A config field has a value outside its allowed range."""


__all__ = ["ConfigError"]
