"""Configuration: the pydantic schema and the loader that reports problems by line."""

from __future__ import annotations

from mailfiler.config.base import parse_ref
from mailfiler.config.loader import ENV_VAR, LoadedConfig, Problem, load_config, sqlite_path
from mailfiler.config.schema import BUILTIN_ENTITIES, Config

__all__ = [
    "BUILTIN_ENTITIES",
    "ENV_VAR",
    "Config",
    "LoadedConfig",
    "Problem",
    "load_config",
    "parse_ref",
    "sqlite_path",
]
