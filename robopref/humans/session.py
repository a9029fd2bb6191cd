"""A human labelling session over one dataset file: which queries, which answers, saved how.

Storage (the ``preferences`` group of the dataset file, written with
:func:`robopref.data.save_queries` after every answer, under the dataset's writer lock, so a
crash loses at most the answer being written). Nothing is written before the first answer:
opening a session (and starting the server) leaves the file untouched.

* ``preferences`` holds **only the answered queries that carry a preference**, in session
  order: ``label_kind = "graded"``, ``teacher = "human"`` (or the labeller's name), ``seed``,
  graded labels as the simulated teachers write them, ``psi_k = n - 1 - (#items ranked
  better) - (#other items tied with k) / 2`` (a preferred left item of a pair is ``[1, 0]``,
  "equal" is ``[0.5, 0.5]``), confidence 1. Unanswered and "can't tell" queries are *not*
  stored there, so no trainer, summary or accuracy can read them as ties.
* ``metadata["human_labels"]`` (version 2): ``"plan"`` (the session's Q queries:
  ``traj_index``, ``start``, ``length``, ``mask`` as ``[Q][K]`` lists), ``"rows"`` (the plan
  index of each stored query), ``"answered"`` (``[Q]`` bool) and ``"answers"`` (``[Q]`` of null
  or ``{"choice": "ranking" | "equal" | "cant_tell", "ranks": [K] (1 = best; null for padding
  items) or null, "seconds": time on the query, "time": UTC ISO time}``). Reopening the file
  continues at the first query with ``answered`` False. Files of version 1 (every plan query in
  ``preferences``, unanswered ones with labels 0 and confidence 0) are resumed and rewritten as
  version 2 at the next answer.
* Queries after the session's rows (``len(rows)`` of them come first) were added by someone
  else, e.g. ``robopref label --append``: a session keeps them, after its own rows, whenever
  it writes, also when they were added while it ran.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
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
from robopref.data.locks import writer_lock
from robopref.humans.active import ActiveQueue, queries_from_json

KEY = "human_labels"
VERSION = 2
CHOICES = ("ranking", "equal", "cant_tell")
MAX_SECONDS = 1e7
"""Largest accepted ``seconds`` of an answer (about 116 days): a sanity bound, not a timeout."""


class FileChangedError(DataValidationError):
    """The dataset file was rewritten by another program after the session read it."""


def _short(x: Any, n: int = 40) -> str:
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


def _signature(path: Path) -> tuple[int, int, int, int]:
    """What tells us that someone else rewrote ``path``: device, inode, size, mtime (ns)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def grades_from_ranks(ranks: np.ndarray) -> np.ndarray:
    """Graded labels ``[n]`` of ranks ``[n]`` (1 = best, equal ranks are ties):
    ``psi_k = n - 1 - #{j: rank_j < rank_k} - (#{j: rank_j == rank_k} - 1) / 2``."""
    r = np.asarray(ranks, dtype=np.float64)
    better = (r[None, :] < r[:, None]).sum(1)
    tied = (r[None, :] == r[:, None]).sum(1)
    return len(r) - 1 - better - 0.5 * (tied - 1)


def check_answer(
    mask: np.ndarray, q: Any, choice: Any, ranks: Any = None, num_queries: int | None = None
) -> tuple[np.ndarray, float, list[int | None] | None]:
    """Validate one answer to a query whose item mask is ``mask`` ``[K]``.

    Returns ``(labels [K], confidence, stored ranks)``. Raises :class:`DataValidationError`
    naming the field (``query``, ``choice`` or ``ranks``) with expected vs found.
    """
    K = len(mask)
    if num_queries is not None and (
        not isinstance(q, int) or isinstance(q, bool) or not 0 <= q < num_queries
    ):
        raise DataValidationError(
            f"answer: field 'query': expected an integer 0 <= query < {num_queries}, "
            f"found {_short(q)}"
        )
    if not isinstance(choice, str) or choice not in CHOICES:
        raise DataValidationError(
            f"answer: field 'choice': expected one of {CHOICES}, found {_short(choice)}"
        )
    n = int(mask.sum())
    labels = np.zeros(K)
    if choice != "ranking":
        if ranks is not None:
            raise DataValidationError(
                f"answer: field 'ranks': expected null for choice {choice!r}, found {_short(ranks)}"
            )
        labels[mask] = (n - 1) / 2.0
        return labels, (0.0 if choice == "cant_tell" else 1.0), None

    def is_int(r: Any) -> bool:
        return isinstance(r, int) and not isinstance(r, bool)

    ok = (
        isinstance(ranks, list)
        and len(ranks) == K
        and all(
            (is_int(r) and 1 <= r <= n) if m else (r is None or is_int(r))
            for r, m in zip(ranks, mask)
        )
    )
    if not ok:
        raise DataValidationError(
            f"answer: field 'ranks': expected {K} integers in [1, {n}] (1 = best; null or any "
            f"integer for padding items), found {_short(ranks)}"
        )
    labels[mask] = grades_from_ranks(np.array([r for r, m in zip(ranks, mask) if m]))
    return labels, 1.0, [int(r) if m else None for r, m in zip(ranks, mask)]


def check_seconds(seconds: Any) -> float | None:
    """``seconds`` of an answer as a float rounded to ms, or None; raises
    :class:`DataValidationError` unless it is null or a finite number in [0, MAX_SECONDS]."""
    if seconds is None:
        return None
    value = math.nan
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        try:
            value = float(seconds)
        except OverflowError:  # an integer of hundreds of digits
            value = math.inf
    if not (math.isfinite(value) and 0.0 <= value <= MAX_SECONDS):
        raise DataValidationError(
            f"answer: field 'seconds': expected null or a number in [0, {MAX_SECONDS:g}] (time "
            f"spent on the query), found {_short(seconds)}"
        )
    return round(value, 3)


def plan_queries(queries: PreferenceQueries, source: str = "preferences") -> PreferenceQueries:
    """All queries of the human session stored in ``queries`` (answered or not), with labels
    and confidence rebuilt from the answers (unanswered: labels 0, confidence 0 — in memory
    only, never written). Raises :class:`DataValidationError` if the session state is broken."""
    state = queries.metadata.get(KEY)
    where = f"{source}.attrs['metadata']['{KEY}']"
    if not isinstance(state, dict):
        raise DataValidationError(f"{where}: expected a JSON object, found {_short(state)}")
    version = state.get("version", 1)
    if version == 1:
        plan = copy.deepcopy(queries)
    elif version == VERSION:
        plan = queries_from_json(state.get("plan"), f"{where}['plan']")
    else:
        raise DataValidationError(f"{where}['version']: expected 1 or {VERSION}, found {version!r}")
    Q, K = plan.traj_index.shape
    for name in ("answered", "answers"):
        if not isinstance(state.get(name), list) or len(state[name]) != Q:
            raise DataValidationError(
                f"{where}['{name}']: expected a list of {Q} entries, found "
                f"{_short(state.get(name), 60)}"
            )
    labels, confidence = np.zeros((Q, K)), np.zeros(Q)
    for i, (done, record) in enumerate(zip(state["answered"], state["answers"])):
        if not done:
            continue
        if not isinstance(record, dict):
            raise DataValidationError(
                f"{where}['answers'][{i}]: expected an answer object, found {_short(record)}"
            )
        try:
            labels[i], confidence[i], _ = check_answer(
                plan.mask[i], i, record.get("choice"), record.get("ranks")
            )
        except DataValidationError as e:
            raise DataValidationError(f"{where}['answers'][{i}]: {e}") from None
    plan.labels, plan.confidence = labels, confidence
    plan.label_kind = "graded"
    plan.teacher, plan.seed = queries.teacher, queries.seed
    plan.metadata = copy.deepcopy(queries.metadata)
    plan.metadata[KEY] = {"version": VERSION, "answered": list(state["answered"]),
                          "answers": list(state["answers"])}  # fmt: skip
    if "active" in state:  # an actively selected session (robopref.humans.active)
        plan.metadata[KEY]["active"] = state["active"]
    return plan


def stored_queries(plan: PreferenceQueries) -> PreferenceQueries:
    """What a session writes to the file: the plan's queries answered with a preference
    (ranking or equal), and the whole plan and every answer in ``metadata["human_labels"]``."""
    state = plan.metadata[KEY]
    rows = [
        i
        for i, (done, a) in enumerate(zip(state["answered"], state["answers"]))
        if done and a["choice"] != "cant_tell"
    ]
    out = plan.subset(np.array(rows, dtype=np.int64))
    out.metadata = {
        **plan.metadata,
        KEY: {
            "version": VERSION,
            "plan": {
                "traj_index": plan.traj_index.tolist(),
                "start": plan.start.tolist(),
                "length": plan.length.tolist(),
                "mask": plan.mask.astype(int).tolist(),
            },
            "rows": rows,
            "answered": state["answered"],
            "answers": state["answers"],
        }
        | ({"active": state["active"]} if "active" in state else {}),
    }
    return out


def other_queries(queries: PreferenceQueries) -> PreferenceQueries | None:
    """The stored queries after the human session's own rows (added by ``label --append``),
    or None when there are none."""
    state = queries.metadata.get(KEY)
    if not isinstance(state, dict) or not isinstance(state.get("rows"), list):
        return None
    n = len(state["rows"])
    if queries.num_queries <= n:
        return None
    return queries.subset(np.arange(n, queries.num_queries))


def merge_queries(own: PreferenceQueries, others: PreferenceQueries | None) -> PreferenceQueries:
    """``own`` (what :func:`stored_queries` gives) followed by ``others`` (from
    :func:`other_queries` of the file as it is now), with the file's teacher name and metadata
    (``appended`` positions shifted by the rows the session added)."""
    if others is None:
        return own
    if others.k != own.k or others.label_kind != own.label_kind:
        raise FileChangedError(
            f"preferences: the queries added after the session's own are k={others.k} "
            f"{others.label_kind}, expected k={own.k} {own.label_kind}; this answer was NOT saved"
        )
    old_rows = others.metadata.get(KEY, {}).get("rows", [])
    shift = own.num_queries - len(old_rows)
    appended = [
        {**a, "first_query": a["first_query"] + shift}
        if isinstance(a, dict) and isinstance(a.get("first_query"), int)
        else a
        for a in others.metadata.get("appended", [])
    ]
    metadata = {**others.metadata, KEY: own.metadata[KEY]}
    if appended:
        metadata["appended"] = appended
    fields = ("traj_index", "start", "length", "labels", "mask", "confidence")
    return PreferenceQueries(
        **{f: np.concatenate([getattr(own, f), getattr(others, f)]) for f in fields},
        label_kind=own.label_kind,
        teacher=others.teacher,
        seed=own.seed,
        metadata=metadata,
    )


def _same_trajectories(a: Any, b: Any) -> bool:
    def arrays(t: Any) -> list[np.ndarray]:
        obs = t.observations if isinstance(t.observations, dict) else {"": t.observations}
        return [*obs.values(), t.actions, t.rewards, t.dones, t.successes]

    if len(a) != len(b):
        return False
    for s, t in zip(a, b):
        xs, ys = arrays(s), arrays(t)
        if len(xs) != len(ys) or not all(np.array_equal(x, y) for x, y in zip(xs, ys)):
            return False
    return True


def answered_queries(
    queries: PreferenceQueries, include_cant_tell: bool = False
) -> PreferenceQueries:
    """The answered queries of a human session, without "can't tell" answers unless
    ``include_cant_tell`` (then as ties with confidence 0). A version-2 file already stores
    only answered queries with a preference, so without ``include_cant_tell`` that is the
    stored set; version-1 files (unanswered queries stored with confidence 0) are filtered.
    Queries from elsewhere are returned unchanged."""
    if queries.metadata.get(KEY) is None:
        return queries
    plan = plan_queries(queries)
    state = plan.metadata[KEY]
    keep = np.array(state["answered"], dtype=bool)
    if not include_cant_tell:
        keep &= np.array([a is None or a.get("choice") != "cant_tell" for a in state["answers"]])
    own = plan.subset(np.flatnonzero(keep))
    others = other_queries(queries)
    if others is None:
        return own
    fields = ("traj_index", "start", "length", "labels", "mask", "confidence")
    return PreferenceQueries(
        **{f: np.concatenate([getattr(own, f), getattr(others, f)]) for f in fields},
        label_kind=own.label_kind,
        teacher=queries.teacher,
        seed=own.seed,
        metadata=own.metadata,
    )


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
            of queries is sampled, written at the first answer); without it such a file is an
            error.

    The file decides: queries of an earlier human session are resumed (``k``, ``num_queries``
    are then ignored), unlabelled queries (``label_kind "none"``, e.g. picked by
    :func:`robopref.rewards.active.select_queries`) are labelled as they are, and a file
    without queries gets ``num_queries`` new ones from :func:`robopref.data.sample_queries`
    (the same ones for the same seed, so a session that got no answer can simply be reopened).

    Opening reads the file and writes nothing. Each answer rewrites the file under its writer
    lock (:func:`robopref.data.locks.writer_lock`): another robopref process writing it at that
    moment makes the answer fail with :class:`~robopref.data.locks.FileBusyError`. A file
    rewritten by someone else since the session last read or wrote it is read again under the
    lock: labels added after the session's own (``robopref label --append``) are kept after
    them; other changes (other trajectories, the session's labels replaced or changed) make the
    answer fail with :class:`FileChangedError` (the session never overwrites labels or
    trajectories it has not seen).
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
        active: ActiveQueue | None = None,
    ) -> None:
        self.path = Path(path)
        self.active = active
        # Taken before reading, so a write that races with the read counts as a change.
        self._signature = _signature(self.path) if self.path.is_file() else None
        self.dataset = load_dataset(self.path)
        self.lock = threading.Lock()
        q = self.dataset.queries
        # Labels stored after the session's own (label --append), kept at every write.
        self._others: PreferenceQueries | None = None
        if q is not None and KEY in q.metadata:
            source = f"{self.path}: preferences"
            self.queries = plan_queries(q, source)
            self.queries.validate(source, self.dataset)
            self._others = other_queries(q)
            if active is not None:
                active.resume(self.dataset, self.state, f"{source}: metadata['{KEY}']")
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
            if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 1:
                raise DataValidationError(
                    f"{self.path}: num_queries: expected an integer >= 1, found {num_queries!r}"
                )
            lengths = [len(t) for t in self.dataset]
            if lengths and segment_length > max(lengths):
                raise DataValidationError(
                    f"{self.path}: segment_length: expected <= {max(lengths)} (the longest "
                    f"trajectory), found {segment_length}"
                )
            rng = np.random.default_rng(seed)
            if active is None:
                queries = sample_queries(self.dataset, num_queries, k, segment_length, rng)
            else:  # a pool of candidates; the queue asks some of them, chosen as answers come
                pool = sample_queries(
                    self.dataset, active.pool_factor * num_queries, k, segment_length, rng
                )
                queries = active.start(self.dataset, pool)
            queries.seed = seed
        Q, K = queries.traj_index.shape
        queries.labels = np.zeros((Q, K))
        queries.confidence = np.zeros(Q)
        queries.label_kind = "graded"
        queries.teacher = labeller
        queries.metadata = {
            **queries.metadata,
            KEY: {"version": VERSION, "answered": [False] * Q, "answers": [None] * Q},
        }
        if active is not None and active.pool is not None:
            queries.metadata[KEY]["active"] = active.record()
        self.queries = queries

    # ---------------------------------------------------------------- state

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

    def labelled_queries(self) -> PreferenceQueries:
        """The queries answered with a preference so far (what the file stores)."""
        return stored_queries(self.queries)

    def extend_plan(self, extra: PreferenceQueries) -> None:
        """Queue ``extra`` (unlabelled queries) after the plan; call with ``lock`` held. The
        file gets them with the next answer."""
        q, n = self.queries, extra.num_queries
        new = PreferenceQueries(
            np.concatenate([q.traj_index, extra.traj_index]),
            np.concatenate([q.start, extra.start]),
            np.concatenate([q.length, extra.length]),
            np.concatenate([q.labels, np.zeros((n, q.k))]),
            np.concatenate([q.mask, extra.mask]),
            np.concatenate([q.confidence, np.zeros(n)]),
            q.label_kind,
            q.teacher,
            q.seed,
            copy.deepcopy(q.metadata),
        )
        state = new.metadata[KEY]
        state["answered"] += [False] * n
        state["answers"] += [None] * n
        if self.active is not None:
            state["active"] = self.active.record()
        self.queries = new

    def progress(self) -> dict[str, Any]:
        nxt = self.next_unanswered()
        return {
            "answered": self.num_answered,
            "total": self.num_queries if self.active is None else self.active.target,
            "next": nxt,
            "done": nxt is None,
            "k": self.queries.k,
        }

    # ---------------------------------------------------------------- answers

    def answer(
        self, q: int, choice: str, ranks: list[int] | None = None, seconds: float | None = None
    ) -> dict[str, Any]:
        """Record the answer to query ``q`` and write the file (atomically, under its lock).

        Args:
            q: query index, ``0 <= q < num_queries`` (an answered query may be answered again).
            choice: ``"ranking"`` (with ``ranks``: K integers, 1 = best, equal ranks are ties,
                null or any integer for padding items), ``"equal"`` (all items tied) or
                ``"cant_tell"`` (``ranks`` must then be None).
            seconds: time spent on the query, None or a finite number in [0, MAX_SECONDS].

        Returns:
            :meth:`progress` after the answer.

        Raises:
            DataValidationError: a field is invalid (nothing is written).
            FileBusyError: another robopref process is writing the file (nothing is written).
            FileChangedError: the file was rewritten by someone else since it was read.
        """
        if isinstance(q, int) and not isinstance(q, bool) and 0 <= q < self.num_queries:
            mask = self.queries.mask[q]
        else:
            mask = np.ones(self.queries.k, dtype=bool)  # only to report the bad query below
        labels, confidence, stored_ranks = check_answer(
            mask, q, choice, ranks, num_queries=self.num_queries
        )
        record = {
            "choice": choice,
            "ranks": stored_ranks,
            "seconds": check_seconds(seconds),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        with self.lock:
            # Change a copy and keep it only once the file holds it.
            new = copy.deepcopy(self.queries)
            new.labels[q] = labels
            new.confidence[q] = confidence
            new.metadata[KEY]["answered"][q] = True
            new.metadata[KEY]["answers"][q] = record
            with writer_lock(self.path, what="save labels"):
                now = _signature(self.path) if self.path.is_file() else None
                others = self._others if now == self._signature else self._reread()
                merged = merge_queries(stored_queries(new), others)
                save_queries(self.path, merged)
                self._signature = _signature(self.path)
                self._others = other_queries(merged)
            self.queries = new
            if self.active is not None:
                self.active.after_answer(self)
            return self.progress()

    def _reread(self) -> PreferenceQueries | None:
        """The labels another program stored after the session's own since the session last
        read or wrote the file (the caller holds the writer lock); raises
        :class:`FileChangedError` when anything else changed."""
        changed = FileChangedError(
            f"{self.path}: the file was rewritten by another program since the labelling "
            "session read it (other trajectories, or its labels replaced); this answer was NOT "
            "saved (the session never overwrites data it has not seen): restart label-ui to "
            "continue with the file as it is now"
        )
        try:
            current = load_dataset(self.path)
        except DataValidationError:
            raise changed from None
        q = current.queries
        state = None if q is None else q.metadata.get(KEY)
        mine = self.state
        if not any(mine["answered"]):  # nothing of the session in the file yet
            ok = q is None and self.dataset.queries is None
        else:
            ok = (
                isinstance(state, dict)
                and state.get("answered") == mine["answered"]
                and state.get("answers") == mine["answers"]
            )
        if not ok or not _same_trajectories(current, self.dataset):
            raise changed
        return None if q is None else other_queries(q)
