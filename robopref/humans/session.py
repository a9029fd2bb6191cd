"""A human labelling session over one dataset file: which queries, which answers, saved how.

Storage (the ``preferences`` group of the dataset file, written with
:func:`robopref.data.save_queries` after every answer, so a crash loses at most the answer
being written):

* ``label_kind = "graded"``, ``teacher = "human"`` (or the labeller's name), ``seed``.
* Answered query: graded labels as the simulated teachers write them, ``psi_k = n - 1 -
  (#items ranked better) - (#other items tied with k) / 2``: a preferred left item of a pair is
  ``[1, 0]``, "equal" is ``[0.5, 0.5]``; confidence 1.
* "Can't tell": labels all equal (a tie) and confidence 0, so trainers drop it.
* Unanswered query: labels 0 and confidence 0 (dropped by trainers too), so a file
  labelled half-way is safe to train on.
* ``metadata["human_labels"]``: ``{"version": 1, "answered": [Q] bool, "answers": [Q] of
  null or {"choice": "ranking" | "equal" | "cant_tell", "ranks": [K] (1 = best; null for
  padding items) or null, "seconds": time on the query, "time": UTC ISO time}}``. Reopening
  the file continues at the first query with ``answered`` False.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from robopref.data import (
    DataValidationError,
    PreferenceQueries,
    load_dataset,
    sample_queries,
    save_queries,
)

KEY = "human_labels"
CHOICES = ("ranking", "equal", "cant_tell")


def grades_from_ranks(ranks: np.ndarray) -> np.ndarray:
    """Graded labels ``[n]`` of ranks ``[n]`` (1 = best, equal ranks are ties):
    ``psi_k = n - 1 - #{j: rank_j < rank_k} - (#{j: rank_j == rank_k} - 1) / 2``."""
    r = np.asarray(ranks, dtype=np.float64)
    better = (r[None, :] < r[:, None]).sum(1)
    tied = (r[None, :] == r[:, None]).sum(1)
    return len(r) - 1 - better - 0.5 * (tied - 1)


def answered_queries(
    queries: PreferenceQueries, include_cant_tell: bool = False
) -> PreferenceQueries:
    """The answered queries of a human session (without "can't tell" answers unless
    ``include_cant_tell``), e.g. for a trainer run with ``use_confidence=False``, which would
    otherwise read unanswered queries as ties. Queries from elsewhere are returned unchanged."""
    state = queries.metadata.get(KEY)
    if state is None:
        return queries
    keep = np.array(state["answered"], dtype=bool)
    if not include_cant_tell:
        keep &= np.array([a is None or a.get("choice") != "cant_tell" for a in state["answers"]])
    return queries.subset(np.flatnonzero(keep))


class LabelSession:
    """The queries of one dataset file and the answers given so far.

    Args:
        path: the dataset file (robopref HDF5, see :mod:`robopref.data.hdf5`).
        k: items per query for a new session.
        num_queries: number of queries of a new session.
        segment_length: steps per item of a new session.
        seed: seed of the query sampling.
        labeller: stored as the queries' ``teacher``.
        overwrite: replace preference labels the file already holds from a teacher (a new set
            of queries is sampled); without it such a file is an error.

    The file decides: queries of an earlier human session are resumed (``k``, ``num_queries``
    are then ignored), unlabelled queries (``label_kind "none"``, e.g. picked by
    :func:`robopref.rewards.active.select_queries`) are labelled as they are, and a file
    without queries gets ``num_queries`` new ones from :func:`robopref.data.sample_queries`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        k: int = 2,
        num_queries: int = 20,
        segment_length: int = 25,
        seed: int = 0,
        labeller: str = "human",
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.dataset = load_dataset(self.path)
        self.lock = threading.Lock()
        self.shown_at: dict[int, float] = {}
        q = self.dataset.queries
        if q is not None and KEY in q.metadata:
            self.queries = q
            self._check_state()
            return
        if q is not None and q.label_kind == "none":
            queries = q
        elif q is not None and not overwrite:
            raise DataValidationError(
                f"{self.path}: preferences: expected no labels or an earlier human session, found "
                f"{q.num_queries} queries labelled by '{q.teacher or q.label_kind}' (pass "
                f"overwrite=True / --overwrite to replace them with new queries)"
            )
        else:
            lengths = [len(t) for t in self.dataset]
            if lengths and segment_length > max(lengths):
                raise DataValidationError(
                    f"{self.path}: segment_length: expected <= {max(lengths)} (the longest "
                    f"trajectory), found {segment_length}"
                )
            queries = sample_queries(
                self.dataset, num_queries, k, segment_length, np.random.default_rng(seed)
            )
            queries.seed = seed
        Q, K = queries.traj_index.shape
        queries.labels = np.zeros((Q, K))
        queries.confidence = np.zeros(Q)
        queries.label_kind = "graded"
        queries.teacher = labeller
        queries.metadata = {
            **queries.metadata,
            KEY: {"version": 1, "answered": [False] * Q, "answers": [None] * Q},
        }
        self.queries = queries
        self.save()

    # ---------------------------------------------------------------- state

    def _check_state(self) -> None:
        state = self.queries.metadata[KEY]
        Q = self.queries.num_queries
        for name in ("answered", "answers"):
            if not isinstance(state.get(name), list) or len(state[name]) != Q:
                raise DataValidationError(
                    f"{self.path}: preferences.attrs['metadata']['{KEY}']['{name}']: expected a "
                    f"list of {Q} entries, found {str(state.get(name))[:60]}"
                )

    @property
    def state(self) -> dict[str, Any]:
        return self.queries.metadata[KEY]

    @property
    def num_queries(self) -> int:
        return self.queries.num_queries

    @property
    def num_answered(self) -> int:
        return int(sum(self.state["answered"]))

    def next_unanswered(self) -> int | None:
        """Index of the first unanswered query, or None when all are answered."""
        for i, done in enumerate(self.state["answered"]):
            if not done:
                return i
        return None

    def progress(self) -> dict[str, Any]:
        nxt = self.next_unanswered()
        return {
            "answered": self.num_answered,
            "total": self.num_queries,
            "next": nxt,
            "done": nxt is None,
            "k": self.queries.k,
        }

    def save(self) -> None:
        save_queries(self.path, self.queries)

    # ---------------------------------------------------------------- answers

    def answer(
        self, q: int, choice: str, ranks: list[int] | None = None, seconds: float | None = None
    ) -> dict[str, Any]:
        """Record the answer to query ``q`` and write the file (atomically).

        Args:
            choice: ``"ranking"`` (with ``ranks``: K integers, 1 = best, equal ranks are ties,
                any value for padding items), ``"equal"`` (all items tied) or ``"cant_tell"``.
            seconds: time spent on the query (stored for reference).

        Returns:
            :meth:`progress` after the answer.
        """
        Q, K = self.queries.traj_index.shape
        if not isinstance(q, int) or isinstance(q, bool) or not 0 <= q < Q:
            raise DataValidationError(
                f"answer: field 'query': expected 0 <= query < {Q}, found {q!r}"
            )
        if choice not in CHOICES:
            raise DataValidationError(
                f"answer: field 'choice': expected one of {CHOICES}, found {choice!r}"
            )
        mask = self.queries.mask[q]
        n = int(mask.sum())
        stored_ranks = None
        if choice == "ranking":
            ok = (
                isinstance(ranks, list)
                and len(ranks) == K
                and all(
                    isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= n
                    for r, m in zip(ranks, mask)
                    if m
                )
            )
            if not ok:
                raise DataValidationError(
                    f"answer: field 'ranks': expected {K} integers in [1, {n}] (1 = best), "
                    f"found {ranks!r}"
                )
            valid = np.array([r for r, m in zip(ranks, mask) if m])
            grades = grades_from_ranks(valid)
            stored_ranks = [int(r) if m else None for r, m in zip(ranks, mask)]
        else:
            grades = np.full(n, (n - 1) / 2.0)
        labels = np.zeros(K)
        labels[mask] = grades
        record = {
            "choice": choice,
            "ranks": stored_ranks,
            "seconds": None if seconds is None else round(float(seconds), 3),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        with self.lock:
            # Change a copy and keep it only once the file holds it.
            new = copy.deepcopy(self.queries)
            new.labels[q] = labels
            new.confidence[q] = 0.0 if choice == "cant_tell" else 1.0
            new.metadata[KEY]["answered"][q] = True
            new.metadata[KEY]["answers"][q] = record
            save_queries(self.path, new)
            self.queries = new
            return self.progress()
