"""What a client's column cleaning may do (fedgc.data.cleaning applies it): a run config's client settings
constant_columns, held_values and max_missing, in a module of its own so that reading a config loads no
numeric library."""

from __future__ import annotations

from dataclasses import dataclass

CONSTANT_POLICIES = ("drop", "error")
HELD_POLICIES = ("missing", "keep")


@dataclass(frozen=True)
class ColumnPolicy:
    """constant_columns: 'drop' | 'error';  held_values: 'missing' | 'keep';
    max_missing: largest tolerated fraction of missing values in a column, in [0, 1)."""

    constant_columns: str = "drop"
    held_values: str = "missing"
    max_missing: float = 0.5
    clean: bool = True  # False: every column and value as it is (a private run's data decide nothing)

    def __post_init__(self) -> None:
        if self.constant_columns not in CONSTANT_POLICIES:
            raise ValueError(f"constant_columns must be 'drop' or 'error', got {self.constant_columns!r}")
        if self.held_values not in HELD_POLICIES:
            raise ValueError(f"held_values must be 'missing' or 'keep', got {self.held_values!r}")
        m = self.max_missing
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < 1:
            raise ValueError(f"max_missing must be a fraction in [0, 1), got {m!r}")
