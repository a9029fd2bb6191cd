"""Pre-gather the segments of preference queries into padded tensors.

A query set of Q queries with K items of (possibly different) lengths becomes

* ``obs`` ``[Q, K, H, obs_dim]`` float32 (``Trajectory.state``),
* ``act`` ``[Q, K, H, act_dim]`` float32,
* ``step_mask`` ``[Q, K, H]`` bool (False for padding steps and padding items),

with H the longest valid segment. Gathering happens once, vectorised with numpy; training then
slices minibatches out of these tensors.

Image observations (``state`` of per-step shape ``[h, w, 3]``) are gathered lazily: the frames
of the used trajectories are stacked once in their own dtype (uint8 for camera frames) and each
step keeps an index into that stack; slicing a batch (``seg[idx]``) gathers its frames then.
A ``[Q, K, H, h, w, 3]`` float copy of every segment never exists.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from robopref.data import DataValidationError, PreferenceQueries, TrajectoryDataset


@dataclass
class SegmentTensors:
    """Padded segments, labels and weights of Q queries (see the module docstring for shapes).

    Attributes:
        obs: ``[Q, K, H, *obs_shape]``; padding steps are zero. ``None`` while the segments
            are lazy (``frames`` is set): slicing gathers a batch's ``obs``.
        act: ``[Q, K, H, act_dim]`` float32; padding steps are zero.
        step_mask: ``[Q, K, H]`` bool.
        item_mask: ``[Q, K]`` bool, False for padding items of ragged lists.
        labels: ``[Q, K]`` float32; graded scores or soft pair probabilities (NaN replaced by 0).
        confidence: ``[Q]`` float32 query weights.
        frames: lazy segments only: ``[N + 1, *obs_shape]`` every used step's observation (in
            the data's dtype) and a last row of zeros that padding steps point to.
        frame_index: lazy segments only: ``[Q, K, H]`` int64 rows of ``frames``.
    """

    obs: torch.Tensor | None
    act: torch.Tensor
    step_mask: torch.Tensor
    item_mask: torch.Tensor
    labels: torch.Tensor
    confidence: torch.Tensor
    frames: torch.Tensor | None = None
    frame_index: torch.Tensor | None = None

    @property
    def lazy(self) -> bool:
        return self.frames is not None

    @property
    def steps(self) -> int:
        """H, the padded segment length."""
        return self.step_mask.shape[2]

    def __len__(self) -> int:
        return self.step_mask.shape[0]

    def __getitem__(self, idx) -> SegmentTensors:
        if self.frames is None:
            return SegmentTensors(*(getattr(self, f.name)[idx] for f in fields(self)[:6]))
        index = self.frame_index[idx]
        # the gathered batch is a plain (dense) one; the frame stack itself is never sliced
        return SegmentTensors(
            self.frames[index.to(self.frames.device)],
            *(getattr(self, f.name)[idx] for f in fields(self)[1:6]),
        )

    def to(self, device: torch.device | str) -> SegmentTensors:
        return SegmentTensors(
            *(None if (v := getattr(self, f.name)) is None else v.to(device) for f in fields(self))
        )


def query_batch(model, seg: SegmentTensors, default: int) -> int:
    """Queries per scoring pass: ``default``, or fewer when ``model.max_batch_steps`` caps the
    steps (``K * H`` per query) one forward pass sees."""
    cap = getattr(model, "max_batch_steps", None)
    if cap is None:
        return default
    per_query = max(1, seg.step_mask.shape[1] * seg.steps)
    return max(1, min(default, cap // per_query))


def _describe(shape: tuple[int, ...]) -> str:
    return f"obs_dim = {shape[0]}" if len(shape) == 1 else f"per-step shape {shape}"


def gather_segments(
    dataset: TrajectoryDataset,
    queries: PreferenceQueries,
    obs_dim: int | None = None,
    act_dim: int | None = None,
    obs_shape: tuple[int, ...] | None = None,
) -> SegmentTensors:
    """Gather every item of ``queries`` from ``dataset`` into padded CPU tensors.

    ``act_dim = 0`` (a state-only reward) gathers no actions (``act`` is ``[Q, K, H, 0]``).
    ``obs_dim`` / ``act_dim`` (or ``obs_shape``, a reward's per-step observation shape), when
    given, are checked against the data and a mismatch raises a
    :class:`~robopref.data.DataValidationError` naming the field. Observations of per-step shape
    ``[h, w, 3]`` (images) give lazy segments (module docstring).
    """
    queries.validate("PreferenceQueries", dataset=dataset)
    ti, start, length, mask = queries.traj_index, queries.start, queries.length, queries.mask
    Q, K = ti.shape
    used = np.unique(ti[mask])
    want = tuple(obs_shape) if obs_shape is not None else None
    if want is None and obs_dim is not None:
        want = (int(obs_dim),)
    states, actions = [], []
    for i in used:
        traj = dataset[int(i)]
        s = np.asarray(traj.state)
        if s.ndim != 2 and not (s.ndim == 4 and s.shape[-1] == 3):
            raise DataValidationError(
                f"trajectory {int(i)}: field 'state': expected [T, obs_dim] vectors or "
                f"[T, H, W, 3] images, found shape {s.shape}"
            )
        states.append(s)
        # act_dim = 0: a state-only reward, actions are not gathered.
        actions.append(np.asarray(traj.actions) if act_dim != 0 else np.zeros((len(s), 0)))
    shapes = {s.shape[1:] for s in states}
    if len(shapes) > 1:
        raise DataValidationError(
            f"dataset: field 'state': expected one per-step shape, found {sorted(shapes)}"
        )
    found = shapes.pop() if shapes else want
    if want is not None and found != want:
        raise DataValidationError(
            f"dataset: field 'state': expected {_describe(want)} (the reward model's), "
            f"found {found[0] if len(found) == len(want) == 1 else _describe(found)}"
        )
    dims = {a.shape[1] for a in actions}
    if len(dims) > 1:
        raise DataValidationError(
            f"dataset: field 'actions': expected one feature size, found {sorted(dims)}"
        )
    found_act = dims.pop() if dims else act_dim
    if act_dim is not None and found_act != act_dim:
        raise DataValidationError(
            f"dataset: field 'actions': expected act_dim = {act_dim} (the reward model's), "
            f"found {found_act}"
        )
    lazy = found is not None and len(found) > 1
    # One flat array per field with a trailing zero row that padding steps point to.
    obs_flat = _stack(states, found, keep_dtype=lazy)
    act_flat = _stack(actions, (act_dim or 0,) if act_dim is not None else None)
    offsets = np.zeros(int(ti.max(initial=0)) + 1, dtype=np.int64)
    offsets[used] = np.cumsum([0] + [len(s) for s in states])[:-1]

    H = int(length[mask].max()) if mask.any() else 1
    steps = np.arange(H)
    step_mask = mask[..., None] & (steps < length[..., None])  # [Q, K, H]
    idx = offsets[np.where(mask, ti, 0)][..., None] + start[..., None] + steps
    idx = np.where(step_mask, idx, len(obs_flat) - 1)
    labels = np.where(mask, np.nan_to_num(queries.labels, nan=0.0), 0.0)
    rest = dict(
        act=torch.from_numpy(act_flat[idx]),
        step_mask=torch.from_numpy(step_mask),
        item_mask=torch.from_numpy(mask.copy()),
        labels=torch.from_numpy(labels.astype(np.float32)),
        confidence=torch.from_numpy(queries.confidence.astype(np.float32)),
    )
    if lazy:
        return SegmentTensors(
            obs=None,
            **rest,
            frames=torch.from_numpy(obs_flat),
            frame_index=torch.from_numpy(idx.astype(np.int64)),
        )
    return SegmentTensors(obs=torch.from_numpy(obs_flat[idx]), **rest)


def _stack(
    arrays: list[np.ndarray], shape: tuple[int, ...] | None, keep_dtype: bool = False
) -> np.ndarray:
    """``[sum T + 1, *shape]``: the arrays one after another, then a row of zeros; float32
    unless ``keep_dtype`` (image frames stay uint8)."""
    shape = arrays[0].shape[1:] if arrays else (shape or (0,))
    dtype = arrays[0].dtype if keep_dtype and arrays else np.float32
    out = np.empty((sum(len(a) for a in arrays) + 1, *shape), dtype=dtype)
    if arrays:
        np.concatenate(arrays, out=out[:-1], casting="unsafe")
    out[-1] = 0
    return out
