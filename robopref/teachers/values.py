"""State values V(start), V(end) of query segments for the regret preference model.

Knox et al. score a segment by ``partial return + V*(s_end) - V*(s_start)``. V* is not known in
Meta-World, so the values come from (in this order of precedence):

1. a ``value_fn(observations [N, obs_dim]) -> [N]`` callable;
2. a per-step array ``trajectory.metadata[value_key]`` of length T (V of each observation) or
   T + 1 (plus V of the state after the last step);
3. the default approximation :func:`knn_values`: the largest discounted reward-to-go observed
   from the ``k`` nearest dataset states of the same task.

The start state of segment ``[s, s + H)`` is observation ``s``; its end state is the state after
its last step, observation ``s + H``. A segment that ends with its trajectory has no such
observation: the value arrays of length T + 1 supply it, otherwise observation ``T - 1`` stands
in for it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from robopref.data import DataValidationError, TrajectoryDataset

ValueFn = Callable[[np.ndarray], np.ndarray]


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def segment_values(
    dataset: TrajectoryDataset,
    traj_index: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    value_fn: ValueFn | None = None,
    value_key: str = "values",
    value_gamma: float = 0.99,
    value_knn: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """``(V(start), V(end))`` for each segment; inputs and outputs are int/float arrays of one
    shape (e.g. ``[Q, K]``, valid entries only: padding must be removed by the caller)."""
    traj_index = np.asarray(traj_index, dtype=np.int64)
    used = np.unique(traj_index)
    if value_fn is None and all(value_key in dataset[int(i)].metadata for i in used):
        return _metadata_values(dataset, traj_index, start, length, value_key)

    lengths = np.array([len(t) for t in dataset.trajectories], dtype=np.int64)
    offsets = _offsets(lengths)
    i_start = offsets[traj_index] + start
    i_end = offsets[traj_index] + np.minimum(start + length, lengths[traj_index] - 1)
    idx = np.concatenate([i_start.ravel(), i_end.ravel()])
    uniq, inverse = np.unique(idx, return_inverse=True)
    states = np.concatenate([np.asarray(t.state, dtype=np.float64) for t in dataset.trajectories])
    if value_fn is not None:
        v = np.asarray(value_fn(states[uniq]), dtype=np.float64)
        if v.shape != (len(uniq),):
            raise DataValidationError(
                f"value_fn: output: expected shape ({len(uniq)},) for observations of shape "
                f"{states[uniq].shape}, found shape {v.shape}"
            )
    else:
        tasks = np.repeat(np.array([t.task for t in dataset.trajectories], dtype=object), lengths)
        rtg = np.concatenate([reward_to_go(t.rewards, value_gamma) for t in dataset.trajectories])
        v = knn_values(states[uniq], tasks[uniq], states, tasks, rtg, value_knn)
    v = v[inverse.ravel()]
    n = i_start.size
    return v[:n].reshape(i_start.shape), v[n:].reshape(i_end.shape)


def _metadata_values(dataset, traj_index, start, length, key):
    ext = []
    for i, t in enumerate(dataset.trajectories):
        v = np.asarray(t.metadata.get(key, np.zeros(len(t) + 1)), dtype=np.float64)
        if v.shape not in ((len(t),), (len(t) + 1,)):
            raise DataValidationError(
                f"trajectory {i}: field 'metadata[{key!r}]': expected shape ({len(t)},) or "
                f"({len(t) + 1},), found shape {v.shape}"
            )
        ext.append(v if len(v) == len(t) + 1 else np.append(v, v[-1]))
    offsets = _offsets(np.array([len(v) for v in ext], dtype=np.int64))
    flat = np.concatenate(ext)
    base = offsets[traj_index] + start
    return flat[base], flat[base + length]


def reward_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``[T]`` discounted reward-to-go ``G_t = sum_{s >= t} gamma^(s-t) r_s`` of ``[T]`` rewards."""
    out = np.empty(len(rewards))
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def knn_values(
    query: np.ndarray,
    query_tasks: np.ndarray,
    ref: np.ndarray,
    ref_tasks: np.ndarray,
    ref_returns: np.ndarray,
    k: int = 5,
    chunk: int = 256,
) -> np.ndarray:
    """Default V* approximation: ``V(s) = max`` of ``ref_returns`` over the ``k`` reference
    states nearest to ``s`` (Euclidean, same task).

    Args:
        query: ``[N, obs_dim]`` states; ``query_tasks`` ``[N]`` their task names.
        ref: ``[M, obs_dim]`` dataset states; ``ref_tasks`` ``[M]``; ``ref_returns`` ``[M]`` the
            discounted reward-to-go observed from each of them.
    Returns:
        ``[N]`` values, in reward units.
    """
    out = np.empty(len(query))
    for task in np.unique(query_tasks):
        qi = np.flatnonzero(query_tasks == task)
        ri = np.flatnonzero(ref_tasks == task)
        y = ref[ri].astype(np.float32)
        y2 = (y * y).sum(1)
        g = ref_returns[ri]
        kk = min(k, len(ri))
        for c in range(0, len(qi), chunk):
            rows = qi[c : c + chunk]
            # |x - y|^2 - |x|^2 = |y|^2 - 2 x.y ranks the neighbours of x; k rounds of argmin
            # are much faster than argpartition for small k.
            d = query[rows].astype(np.float32) @ y.T
            d *= -2.0
            d += y2
            best = np.full(len(rows), -np.inf)
            r = np.arange(len(rows))
            for _ in range(kk):
                j = d.argmin(1)
                best = np.maximum(best, g[j])
                d[r, j] = np.inf
            out[rows] = best
    return out
