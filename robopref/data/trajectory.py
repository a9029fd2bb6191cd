"""The one data model for simulated and real robots: ``Trajectory`` and ``TrajectoryDataset``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Observations = np.ndarray | dict[str, np.ndarray]


class DataValidationError(ValueError):
    """Raised when a trajectory, query set or file does not have the expected structure.

    The message names the source (file or object), the field and the expected vs found
    shape or dtype.
    """


def _describe(arr: Any) -> str:
    """``(39,) float64``: the per-step shape and dtype of a ``[T, ...]`` array."""
    arr = np.asarray(arr)
    return f"{tuple(arr.shape[1:])} {arr.dtype}"


def _observations(obs: Observations) -> str:
    if isinstance(obs, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in obs.items()) + "}"
    return _describe(obs)


def _names(items: Sequence[str], most: int = 6) -> str:
    """``['a', 'b', ... (+5 more)]``: a list that stays short however long it is."""
    shown = ", ".join(repr(x) for x in items[:most])
    more = f", ... (+{len(items) - most} more)" if len(items) > most else ""
    return f"[{shown}{more}]"


def _check(cond: bool, source: str, field_name: str, expected: str, found: str) -> None:
    if not cond:
        raise DataValidationError(
            f"{source}: field '{field_name}': expected {expected}, found {found}"
        )


#: Largest magnitude a stored number may have: models and losses compute in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def value_problem(arr: np.ndarray, name: str) -> str | None:
    """What is wrong with the values of a numeric array, or None: NaN/inf, or (floats) a
    magnitude beyond float32's range (1e300 is finite in float64 but inf in the float32 the
    models use). For ``name == "rewards"`` the sum of magnitudes must fit too, so that every
    segment sum and return is finite."""
    if not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
        return None
    finite = np.isfinite(arr)
    bad = int(arr.size - finite.sum())
    if bad:
        return f"{bad} NaN/inf value(s)"
    big = np.abs(arr) > FLOAT32_MAX
    if big.any():
        return (
            f"{int(big.sum())} value(s) beyond the float32 range (|x| <= {FLOAT32_MAX:.3g}), "
            f"e.g. {arr[big][0]:.3g}"
        )
    if name == "rewards":
        with np.errstate(over="ignore"):
            total = float(np.abs(arr.astype(np.float64)).sum())
        if not total <= FLOAT32_MAX:
            return (
                f"rewards whose sum overflows (sum of |reward| = {total:.3g}, expected <= "
                f"{FLOAT32_MAX:.3g} so that segment sums and returns stay finite)"
            )
    return None


@dataclass(repr=False)
class Trajectory:
    """One episode of T steps.

    Attributes:
        observations: ``[T, obs_dim]`` array, or a dict of ``[T, ...]`` arrays (e.g. ``"state"``
            ``[T, 39]`` and ``"image"`` ``[T, H, W, 3]`` uint8).
        actions: ``[T, act_dim]`` float array.
        rewards: ``[T]`` ground-truth (or learned) reward per step.
        successes: ``[T]`` bool, the task's success flag after each step.
        dones: ``[T]`` bool, episode end (terminal or time limit) after each step.
        task: task name, e.g. ``"button-press-v3"``.
        instruction: natural-language instruction (used by language-conditioned policies).
        metadata: free-form JSON-serialisable information (collection mode, seed, ...).
        step_tasks: ``[T]`` strings, the task of each step, for an episode whose task changes
            midway (a LeRobot episode with several ``task_index`` values); None when every
            step's task is the episode's ``instruction`` (or ``task``).
        extras: other per-step arrays ``[T, ...]`` that are neither observations nor the fields
            above; ``"original_rewards"`` holds the recorded rewards when ``rewards`` holds a
            learned reward.
    """

    observations: Observations
    actions: np.ndarray
    rewards: np.ndarray
    successes: np.ndarray | None = None
    dones: np.ndarray | None = None
    task: str = ""
    instruction: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    step_tasks: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.actions = np.asarray(self.actions)
        if self.step_tasks is not None:
            self.step_tasks = np.asarray(self.step_tasks, dtype=str)
        self.extras = {k: np.asarray(v) for k, v in self.extras.items()}
        self.rewards = np.asarray(self.rewards, dtype=np.float64)
        T = len(self.actions)
        if self.successes is None:
            self.successes = np.zeros(T, dtype=bool)
        if self.dones is None:
            self.dones = np.zeros(T, dtype=bool)
            if T:
                self.dones[-1] = True
        self.successes = np.asarray(self.successes, dtype=bool)
        self.dones = np.asarray(self.dones, dtype=bool)
        self.validate()

    def validate(self, source: str = "Trajectory") -> None:
        """Check shapes are consistent; raise :class:`DataValidationError` naming the field."""
        T = len(self.actions)
        _check(
            self.actions.ndim == 2, source, "actions", "[T, act_dim]", f"shape {self.actions.shape}"
        )
        for name, arr in (
            ("rewards", self.rewards),
            ("successes", self.successes),
            ("dones", self.dones),
        ):
            _check(arr.shape == (T,), source, name, f"shape ({T},)", f"shape {arr.shape}")
        if self.step_tasks is not None:
            shape = np.shape(self.step_tasks)
            _check(shape == (T,), source, "step_tasks", f"shape ({T},)", f"shape {shape}")
        for key, arr in self.extras.items():
            _check(
                isinstance(key, str) and key != "" and "/" not in key,
                source,
                "extras",
                "keys that are non-empty strings without '/'",
                repr(key),
            )
            _check(
                arr.ndim >= 1 and len(arr) == T,
                source,
                f"extras/{key}",
                f"array with first dimension {T}",
                f"shape {arr.shape}",
            )
        if isinstance(self.observations, dict):
            for key, arr in self.observations.items():
                _check(
                    isinstance(arr, np.ndarray) and arr.ndim >= 1 and len(arr) == T,
                    source,
                    f"obs/{key}",
                    f"array with first dimension {T}",
                    f"shape {np.shape(arr)}",
                )
        else:
            self.observations = np.asarray(self.observations)
            _check(
                self.observations.ndim >= 2 and len(self.observations) == T,
                source,
                "observations",
                f"[{T}, obs_dim]",
                f"shape {self.observations.shape}",
            )

    def __len__(self) -> int:
        return len(self.actions)

    def __repr__(self) -> str:
        """One line: task, length, per-step shapes, return and success; never the arrays."""
        parts = [f"task={self.task!r}", f"steps={len(self)}"]
        if self.instruction:
            text = (
                self.instruction if len(self.instruction) <= 40 else self.instruction[:37] + "..."
            )
            parts.append(f"instruction={text!r}")
        parts += [
            f"observations={_observations(self.observations)}",
            f"actions={_describe(self.actions)}",
            f"return={self.episode_return:.4g}",
            f"success={self.success}",
        ]
        return f"Trajectory({', '.join(parts)})"

    @property
    def state(self) -> np.ndarray:
        """Vector observations ``[T, obs_dim]`` (the ``"state"`` key of dict observations)."""
        if isinstance(self.observations, dict):
            if "state" not in self.observations:
                raise KeyError(f"trajectory of task '{self.task}' has no 'state' observation")
            return self.observations["state"]
        return self.observations

    @property
    def success(self) -> bool:
        """Whether the task was solved at any step of the episode."""
        return bool(self.successes.any())

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())

    def slice(self, start: int, length: int) -> Trajectory:
        """Return the segment ``[start, start + length)`` as a new Trajectory (views, no copy)."""
        if start < 0 or start + length > len(self):
            raise IndexError(
                f"segment [{start}, {start + length}) outside trajectory of length {len(self)}"
            )
        sl = slice(start, start + length)
        obs = (
            {k: v[sl] for k, v in self.observations.items()}
            if isinstance(self.observations, dict)
            else self.observations[sl]
        )
        return Trajectory(
            observations=obs,
            actions=self.actions[sl],
            rewards=self.rewards[sl],
            successes=self.successes[sl],
            dones=self.dones[sl],
            task=self.task,
            instruction=self.instruction,
            metadata=dict(self.metadata, segment_start=start),
            step_tasks=None if self.step_tasks is None else self.step_tasks[sl],
            extras={k: v[sl] for k, v in self.extras.items()},
        )

    def frame_tasks(self) -> np.ndarray:
        """``[T]`` strings: the task of each step (``step_tasks``, or the episode's
        ``instruction`` or ``task`` on every step)."""
        if self.step_tasks is not None:
            return self.step_tasks
        return np.full(len(self), self.instruction or self.task, dtype=object).astype(str)


@dataclass(repr=False)
class TrajectoryDataset:
    """A list of trajectories plus, optionally, preference queries over their segments."""

    trajectories: list[Trajectory] = field(default_factory=list)
    queries: Any = None  # PreferenceQueries | None (kept untyped to avoid an import cycle)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.trajectories)

    def __repr__(self) -> str:
        """A short summary like Hugging Face ``datasets``: counts, tasks, observation and
        action shapes, the queries and the metadata keys; never the arrays."""
        lines = [
            f"trajectories: {len(self)}",
            f"steps: {sum(len(t) for t in self.trajectories)}",
            f"tasks: {_names(self.tasks)}",
        ]
        if self.trajectories:
            t0 = self.trajectories[0]
            lines.append(f"observations: {_observations(t0.observations)}")
            lines.append(f"actions: {_describe(t0.actions)}")
        if self.queries is not None:
            lines.append(f"queries: {self.queries!r}")
        if self.metadata:
            lines.append(f"metadata: {_names(sorted(map(str, self.metadata)))}")
        body = "".join(f"    {line},\n" for line in lines)
        return "TrajectoryDataset({\n" + body + "})"

    def __getitem__(self, i: int) -> Trajectory:
        return self.trajectories[i]

    def __iter__(self) -> Iterator[Trajectory]:
        return iter(self.trajectories)

    @property
    def tasks(self) -> list[str]:
        return sorted({t.task for t in self.trajectories})

    def by_task(self, task: str) -> TrajectoryDataset:
        return TrajectoryDataset(
            [t for t in self.trajectories if t.task == task], None, dict(self.metadata)
        )

    def extend(self, trajectories: Sequence[Trajectory]) -> None:
        self.trajectories.extend(trajectories)

    def validate(self, source: str = "TrajectoryDataset") -> None:
        """Check the dataset can be stored and used as one batch of data.

        Beyond :meth:`Trajectory.validate` for each trajectory: actions and rewards are numeric
        and finite, observations numeric (or bool) and finite, every trajectory has the same
        ``act_dim`` and the same observation keys with the same per-step shapes, dict
        observation keys are non-empty and contain no ``"/"``, and the queries (if any) lie
        inside the trajectories. Raises :class:`DataValidationError` naming the trajectory and
        the field.
        """
        ref: dict[str, tuple[int, ...]] | None = None
        ref_format = None
        for i, t in enumerate(self.trajectories):
            where = f"{source}: trajectory {i}"
            t.validate(where)
            fields = {"actions": t.actions}
            obs_format = "dict" if isinstance(t.observations, dict) else "array"
            if obs_format == "dict":
                for key, arr in t.observations.items():
                    _check(
                        isinstance(key, str) and key != "" and "/" not in key and key != ".",
                        where,
                        "observations",
                        "keys that are non-empty strings without '/'",
                        repr(key),
                    )
                    fields[f"obs/{key}"] = arr
            else:
                fields["observations"] = t.observations
            for name, arr in fields.items():
                numeric = _is_numeric(arr.dtype) or (name != "actions" and arr.dtype == np.bool_)
                _check(numeric, where, name, "a numeric dtype", f"dtype {arr.dtype}")
            for key, arr in t.extras.items():
                fields[f"extras/{key}"] = arr
                _check(
                    _is_numeric(arr.dtype) or arr.dtype == np.bool_,
                    where,
                    f"extras/{key}",
                    "a numeric dtype",
                    f"dtype {arr.dtype}",
                )
            fields["rewards"] = t.rewards
            for name, arr in fields.items():
                problem = value_problem(arr, name)
                _check(problem is None, where, name, "finite values", problem)
            shapes = {k: v.shape[1:] for k, v in fields.items() if k != "rewards"}
            if ref is None:
                ref, ref_format = shapes, obs_format
                continue
            _check(
                obs_format == ref_format,
                where,
                "observations",
                f"{ref_format} observations as in trajectory 0",
                f"{obs_format} observations",
            )
            _check(
                {k for k in shapes if k.startswith("extras/")}
                == {k for k in ref if k.startswith("extras/")},
                where,
                "extras",
                f"keys {sorted(k[7:] for k in ref if k.startswith('extras/'))} as in trajectory 0",
                f"keys {sorted(k[7:] for k in shapes if k.startswith('extras/'))}",
            )
            _check(
                shapes.keys() == ref.keys(),
                where,
                "observations",
                f"keys {sorted(ref)} as in trajectory 0",
                f"keys {sorted(shapes)}",
            )
            for k, shape in shapes.items():
                _check(
                    shape == ref[k],
                    where,
                    k,
                    f"per-step shape {ref[k]} as in trajectory 0",
                    f"shape {fields[k].shape}",
                )
        if self.queries is not None:
            self.queries.validate(f"{source}: queries", self)


def _is_numeric(dtype: np.dtype) -> bool:
    """Integer or floating point (not bool, complex, strings or objects)."""
    return bool(np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))
