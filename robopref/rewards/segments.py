"""Pre-gather the segments of preference queries into padded tensors.

A query set of Q queries with K items of (possibly different) lengths becomes

* ``obs`` ``[Q, K, H, obs_dim]`` float32 (``Trajectory.state``),
* ``act`` ``[Q, K, H, act_dim]`` float32,
* ``step_mask`` ``[Q, K, H]`` bool (False for padding steps and padding items),

with H the longest valid segment. Gathering happens once, vectorised with numpy; training then
slices minibatches out of these tensors.
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
        obs: ``[Q, K, H, obs_dim]`` float32; padding steps are zero.
        act: ``[Q, K, H, act_dim]`` float32; padding steps are zero.
        step_mask: ``[Q, K, H]`` bool.
        item_mask: ``[Q, K]`` bool, False for padding items of ragged lists.
        labels: ``[Q, K]`` float32; graded scores or soft pair probabilities (NaN replaced by 0).
        confidence: ``[Q]`` float32 query weights.
    """

    obs: torch.Tensor
    act: torch.Tensor
    step_mask: torch.Tensor
    item_mask: torch.Tensor
    labels: torch.Tensor
    confidence: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def __getitem__(self, idx) -> SegmentTensors:
        return SegmentTensors(*(getattr(self, f.name)[idx] for f in fields(self)))

    def to(self, device: torch.device | str) -> SegmentTensors:
        return SegmentTensors(*(getattr(self, f.name).to(device) for f in fields(self)))


def gather_segments(
    dataset: TrajectoryDataset,
    queries: PreferenceQueries,
    obs_dim: int | None = None,
    act_dim: int | None = None,
) -> SegmentTensors:
    """Gather every item of ``queries`` from ``dataset`` into padded CPU tensors.

    ``act_dim = 0`` (a state-only reward) gathers no actions (``act`` is ``[Q, K, H, 0]``).
    ``obs_dim`` / ``act_dim``, when given, are checked against the data and a mismatch raises a
    :class:`~robopref.data.DataValidationError` naming the field.
    """
    queries.validate("PreferenceQueries", dataset=dataset)
    ti, start, length, mask = queries.traj_index, queries.start, queries.length, queries.mask
    Q, K = ti.shape
    used = np.unique(ti[mask])
    states, actions = [], []
    for i in used:
        traj = dataset[int(i)]
        s = np.asarray(traj.state)
        if s.ndim != 2:
            raise DataValidationError(
                f"trajectory {int(i)}: field 'state': expected [T, obs_dim], found shape {s.shape}"
            )
        states.append(s)
        # act_dim = 0: a state-only reward, actions are not gathered.
        actions.append(np.asarray(traj.actions) if act_dim != 0 else np.zeros((len(s), 0)))
    for name, arrs, want in (("state", states, obs_dim), ("actions", actions, act_dim)):
        dims = {a.shape[1] for a in arrs}
        if len(dims) > 1:
            raise DataValidationError(
                f"dataset: field '{name}': expected one feature size, found {sorted(dims)}"
            )
        found = dims.pop() if dims else want
        if want is not None and found != want:
            label = "obs_dim" if name == "state" else "act_dim"
            raise DataValidationError(
                f"dataset: field '{name}': expected {label} = {want} (the reward model's), found {found}"
            )
    # One flat float32 array per field with a trailing zero row that padding steps point to.
    obs_flat = _stack(states, obs_dim)
    act_flat = _stack(actions, act_dim)
    offsets = np.zeros(int(ti.max(initial=0)) + 1, dtype=np.int64)
    offsets[used] = np.cumsum([0] + [len(s) for s in states])[:-1]

    H = int(length[mask].max()) if mask.any() else 1
    steps = np.arange(H)
    step_mask = mask[..., None] & (steps < length[..., None])  # [Q, K, H]
    idx = offsets[np.where(mask, ti, 0)][..., None] + start[..., None] + steps
    idx = np.where(step_mask, idx, len(obs_flat) - 1)
    obs, act = obs_flat[idx], act_flat[idx]
    labels = np.where(mask, np.nan_to_num(queries.labels, nan=0.0), 0.0)
    return SegmentTensors(
        obs=torch.from_numpy(obs),
        act=torch.from_numpy(act),
        step_mask=torch.from_numpy(step_mask),
        item_mask=torch.from_numpy(mask.copy()),
        labels=torch.from_numpy(labels.astype(np.float32)),
        confidence=torch.from_numpy(queries.confidence.astype(np.float32)),
    )


def _stack(arrays: list[np.ndarray], dim: int | None) -> np.ndarray:
    """``[sum T + 1, D]`` float32: the arrays one after another, then a row of zeros."""
    d = arrays[0].shape[1] if arrays else (dim or 0)
    out = np.empty((sum(len(a) for a in arrays) + 1, d), dtype=np.float32)
    if arrays:
        np.concatenate(arrays, out=out[:-1])
    out[-1] = 0.0
    return out
