"""Typed configuration of a simulated teacher and the B-Pref named presets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from robopref.config import Seed, StrictModel

#: The name of a teacher configured field by field rather than from a preset.
CUSTOM = "custom"

#: Named presets: B-Pref's teachers plus the regret model. Thresholds of "skip" and "equal" are
#: relative (fractions of the mean segment return), as in B-Pref's scripts.
PRESETS: dict[str, dict[str, Any]] = {
    "oracle": {},
    "stochastic": {"beta": 1.0},
    "myopic": {"gamma": 0.9},
    "mistake": {"eps": 0.1},
    "skip": {"skip_threshold": 0.1, "threshold_mode": "relative"},
    "equal": {"equal_threshold": 0.1, "threshold_mode": "relative"},
    "regret": {"regret": True, "beta": 1.0},
}


class TeacherConfig(StrictModel):
    """One simulated labeller with B-Pref's composable irrationalities (Lee et al. 2021).

    The teacher scores each item of a query with a utility ``u`` and ranks the items:

    * ``u = sum_t gamma^(H-1-t) r_t`` (the myopic, discounted segment return; ``gamma = 1``
      gives the plain return), plus ``V(end) - V(start)`` when ``regret`` is set (Knox et al.).
    * ``beta = None``: perfectly rational, rank by ``u`` (exact ties give equal labels);
      ``beta > 0``: Boltzmann-rational, sample the ranking by Plackett-Luce with scores
      ``beta * u`` (for pairs ``P(i > j) = sigmoid(beta (u_i - u_j))``).
    * ``eps``: with this probability per query the teacher makes a mistake: the labels of two
      distinct, uniformly drawn items are swapped (for pairs: the label is flipped).
    * ``skip_threshold``: drop a query when the (undiscounted) returns of all its items are
      below this threshold.
    * ``equal_threshold``: items whose (undiscounted) returns differ by less than this
      threshold are labelled equally preferred (for pairs ``[0.5, 0.5]``).

    ``name`` is one of the presets of :data:`PRESETS` or ``"custom"``. A preset name fills in
    the preset's settings for every field the config does not set itself, so
    ``{name: mistake}`` (or ``teacher.name=mistake`` on the command line) is B-Pref's mistake
    teacher (``eps = 0.1``) and ``{name: mistake, eps: 0.2}`` the same teacher with more
    mistakes.

    ``threshold_mode = "relative"`` multiplies both thresholds by the dataset's mean segment
    return (mean reward per step x segment length), as B-Pref does with its average return.

    Units: thresholds are in reward units (absolute mode) or fractions (relative mode);
    ``beta`` is in 1 / reward units.
    """

    name: str = CUSTOM
    """A preset of :data:`PRESETS` (oracle, stochastic, myopic, mistake, skip, equal, regret)
    or ``custom``; a preset fills in every field this config does not set."""
    beta: float | None = Field(default=None, gt=0)
    """Boltzmann rationality in 1 / reward units; None: perfectly rational."""
    gamma: float = Field(default=1.0, gt=0, le=1)
    """Myopic discount of the segment return (1: the plain return)."""
    eps: float = Field(default=0.0, ge=0, le=1)
    """Probability per query of a mistake (two items' labels swapped)."""
    skip_threshold: float | None = None
    """Drop a query when the returns of all its items are below this; None: never."""
    equal_threshold: float = Field(default=0.0, ge=0)
    """Items whose returns differ by less than this are labelled equally preferred."""
    threshold_mode: Literal["absolute", "relative"] = "absolute"
    """``relative`` multiplies both thresholds by the dataset's mean segment return."""
    regret: bool = False
    """Add ``V(end) - V(start)`` to the utility (regret-based preferences, Knox et al.)."""
    value_key: str = "values"
    """``trajectory.metadata`` key of per-step state values for ``regret`` (when absent, values
    come from the nearest dataset states' discounted reward-to-go)."""
    value_gamma: float = Field(default=0.99, gt=0, le=1)
    """Discount of the reward-to-go that estimates a state value."""
    value_knn: int = Field(default=5, ge=1)
    """Nearest dataset states (same task) searched when a state value is estimated."""
    soft: bool = False
    """Pairs get soft labels (the probability that item 0 is preferred)."""
    seed: Seed = 0
    """Seeds the teacher's random choices (Boltzmann sampling, mistakes)."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        # The preset's settings first, then what the config says: explicit values win.
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            preset = PRESETS.get(data["name"])
            if preset:
                return {**preset, **data}
        return data

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name not in PRESETS and name != CUSTOM:
            raise ValueError(
                f"unknown teacher '{name}': expected one of {', '.join([*PRESETS, CUSTOM])}"
            )
        return name


def preset_config(name: str, **overrides: Any) -> TeacherConfig:
    """The preset ``name`` (one of :data:`PRESETS`) with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown teacher preset '{name}': expected one of {sorted(PRESETS)}")
    return TeacherConfig(**{"name": name, **PRESETS[name], **overrides})
