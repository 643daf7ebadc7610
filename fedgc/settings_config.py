"""How a settings dataclass is read from a config file, for pydantic (fedgc.app.config parses and serialises
the run config with it; nothing below fedgc.app imports pydantic).

A settings dataclass sets `__pydantic_config__ = SETTINGS_CONFIG`: an unknown key is an error, a number must
be finite (a field that allows infinity says so in fedgc.app.config), and the docstring under each field is
its documentation (fedgc.app.config.config_reference reads it from the source; pydantic does not, as parsing
every settings class's source cost each run 0.1 s). Where its type alone does not say how a value is
written, a string in the field's Annotated metadata does ("[lo, hi], two numbers"; error messages and the
reference use it). Its own __post_init__ keeps its invariants, raising ConfigError, however it is built.
"""

from __future__ import annotations

from typing import Any

SETTINGS_CONFIG: dict[str, Any] = {"extra": "forbid", "allow_inf_nan": False}
