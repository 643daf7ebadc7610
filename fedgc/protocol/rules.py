"""Server update rules: how A_s moves after a round, what the clients must reply, what it costs.

A rule is a small object; the round loop (fedgc.protocol.loop), the reply validation and the privacy
accounting ask it instead of comparing names, so a third rule is one more class here.

    newton   exact least squares of every row block per round (fedgc.core.regression.newton_update);
             the rounds are a fixed-point iteration, relaxed when a round fails to contract.
    gd       the paper's gradient step (fedgc.core.regression.gd_update); its replies carry gradients,
             so one more exchange collects the statistics for the Granger tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fedgc.core.regression import Blocks, Diagonal, RegressionStats, gd_update, newton_update
from fedgc.errors import ConfigError
from fedgc.protocol.messages import ClientReply, RequestKind


class RuleSettings(Protocol):
    """The server settings an update reads (fedgc.protocol.settings.ServerConfig has them)."""

    @property
    def diagonal(self) -> Diagonal: ...

    @property
    def penalty(self) -> float: ...

    @property
    def learning_rate(self) -> float | None: ...

    @property
    def burn_in(self) -> int: ...


class UpdateRule:
    """name: as in the config; request: what a round asks the clients for (fedgc.protocol.messages.REPLY_FIELDS);
    relaxed: damp the step when a round fails to contract; final_exchange: the rounds' replies carry no
    regression statistics, so one more 'stats' exchange is needed for the tests."""

    name: str = ""
    request: RequestKind = "newton"
    relaxed: bool = False
    final_exchange: bool = False

    def update(
        self,
        A_old: np.ndarray,
        replies: Sequence[ClientReply],
        stats: RegressionStats | None,
        blocks: Blocks,
        config: RuleSettings,
    ) -> np.ndarray:
        """The next A_s over the active clients' layout. stats: the round's regression statistics when
        the replies carry pseudo-observations (else None)."""
        raise NotImplementedError

    def data_dependent_augmentations(self, rounds: int) -> int:
        """How many exchanges of a run of `rounds` server updates send augmentations computed from the
        clients' data (every exchange but the opening, all-zero one)."""
        raise NotImplementedError


class NewtonRule(UpdateRule):
    name, request, relaxed, final_exchange = "newton", "newton", True, False

    def update(
        self,
        A_old: np.ndarray,
        replies: Sequence[ClientReply],
        stats: RegressionStats | None,
        blocks: Blocks,
        config: RuleSettings,
    ) -> np.ndarray:
        if stats is None:
            raise ValueError("the newton rule needs the round's regression statistics")
        informations = [r.required("information") for r in replies]
        return newton_update(stats, informations, blocks, diagonal=config.diagonal, penalty=config.penalty, start=A_old)

    def data_dependent_augmentations(self, rounds: int) -> int:
        return rounds - 1


class GradientRule(UpdateRule):
    name, request, relaxed, final_exchange = "gd", "gd", False, True

    def update(
        self,
        A_old: np.ndarray,
        replies: Sequence[ClientReply],
        stats: RegressionStats | None,
        blocks: Blocks,
        config: RuleSettings,
    ) -> np.ndarray:
        return gd_update(
            A_old, [r.states for r in replies], [r.required("gradient") for r in replies],
            [r.required("information") for r in replies],
            blocks, diagonal=config.diagonal, learning_rate=config.learning_rate, penalty=config.penalty,
            burn_in=config.burn_in,
        )  # fmt: skip

    def data_dependent_augmentations(self, rounds: int) -> int:
        return rounds  # the final statistics exchange follows the last update


RULES: dict[str, UpdateRule] = {rule.name: rule for rule in (NewtonRule(), GradientRule())}


def rule_named(name: str) -> UpdateRule:
    """The rule of that name; ConfigError naming the rules there are."""
    try:
        return RULES[name]
    except (KeyError, TypeError):
        choices = " or ".join(repr(n) for n in RULES)
        raise ConfigError(f"server.rule must be {choices}, got {name!r}") from None
