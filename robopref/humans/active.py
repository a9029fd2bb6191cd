"""Active query selection for a labelling session: which queries the page asks next.

With ``label-ui --select disagreement|entropy`` the session does not ask a fixed list. It draws
a pool of candidate queries (``pool_factor`` x the label budget), asks a first batch of
``2 x retrain_every`` drawn uniformly, and every ``retrain_every`` answers retrains a reward
ensemble on the answers so far in a background thread, then appends the ``retrain_every``
candidates it finds most informative. The page never waits for the ensemble: it keeps serving
the queries already queued, and when the queue runs dry before a retraining finishes the next
candidates are taken by the last scores (uniformly before the first).

The labelling page knows nothing of models: the ensemble comes in as a *selector*, an object
with ``fit(answered_queries)`` and ``pick(num, asked) -> pool indices`` (the ``robopref``
command passes :class:`robopref.rewards.active.ActiveSelector`).

The file records the selection in ``metadata["human_labels"]["active"]``: the strategy, the
budget (``target``), ``retrain_every``, the pool and ``pool_index`` (the pool index of every
query asked, in order), so that a reopened session continues with the same pool.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from robopref.data import DataValidationError, PreferenceQueries, TrajectoryDataset

SELECTIONS = ("random", "disagreement", "entropy")


class Selector(Protocol):
    def fit(self, answered: PreferenceQueries) -> None: ...

    def pick(self, num: int, asked: set[int] | None = None) -> np.ndarray: ...


SelectorFactory = Callable[[TrajectoryDataset, PreferenceQueries, str, int], Selector]


def _pool_json(pool: PreferenceQueries) -> dict[str, Any]:
    return {
        "traj_index": pool.traj_index.tolist(),
        "start": pool.start.tolist(),
        "length": pool.length.tolist(),
        "mask": pool.mask.astype(int).tolist(),
    }


def queries_from_json(obj: Any, where: str) -> PreferenceQueries:
    """Unlabelled queries from their JSON form (``traj_index``, ``start``, ``length`` and
    ``mask`` as ``[Q][K]`` lists), as a session state stores its plan and candidate pool;
    ``where`` names the field in the error."""
    try:
        return PreferenceQueries(
            np.asarray(obj["traj_index"], dtype=np.int64),
            np.asarray(obj["start"], dtype=np.int64),
            np.asarray(obj["length"], dtype=np.int64),
            mask=np.asarray(obj["mask"], dtype=bool),
            label_kind="none",
        )
    except (KeyError, TypeError, ValueError) as e:
        found = repr(obj)
        found = found if len(found) <= 40 else found[:37] + "..."
        raise DataValidationError(
            f"{where}: expected traj_index, start, length and mask as [Q][K] integer lists, "
            f"found {found} ({e})"
        ) from None


class ActiveQueue:
    """The growing list of queries of an active session (see the module docstring).

    Args:
        strategy: ``"disagreement"`` or ``"entropy"`` (``"random"``: uniformly from the pool,
            no model).
        target: the label budget (queries asked in all).
        retrain_every: answers between two retrainings.
        selector_factory: builds the selector from (dataset, pool, strategy, seed).
        pool_factor: candidates per query of the budget.
        seed: seeds the pool and the selector.
    """

    def __init__(
        self,
        strategy: str,
        target: int,
        retrain_every: int,
        selector_factory: SelectorFactory,
        pool_factor: int = 10,
        seed: int = 0,
    ) -> None:
        if strategy not in SELECTIONS:
            raise DataValidationError(f"--select: expected one of {SELECTIONS}, found {strategy!r}")
        if retrain_every < 1:
            raise DataValidationError(
                f"--retrain-every: expected an integer >= 1, found {retrain_every}"
            )
        self.strategy, self.target, self.retrain_every = strategy, target, retrain_every
        self.factory, self.pool_factor, self.seed = selector_factory, pool_factor, seed
        self.selector: Selector | None = None
        self.pool: PreferenceQueries | None = None
        self.pool_index: list[int] = []
        self.fitted_at = 0  # answers the last retraining started with
        self.thread: threading.Thread | None = None
        self.retrainings = 0

    # ------------------------------------------------------------------ set up

    def start(self, dataset: TrajectoryDataset, pool: PreferenceQueries) -> PreferenceQueries:
        """A new session over ``pool``: the first queries to ask."""
        self.pool = pool
        self.target = min(self.target, pool.num_queries)
        self.selector = self.factory(dataset, pool, self._model_strategy(), self.seed)
        first = self.selector.pick(min(2 * self.retrain_every, self.target), set())
        self.pool_index = [int(i) for i in first]
        return pool.subset(np.asarray(self.pool_index, dtype=np.int64))

    def resume(self, dataset: TrajectoryDataset, state: dict[str, Any], where: str) -> None:
        """Continue the selection recorded in ``state`` (the session's metadata)."""
        rec = state.get("active")
        if not isinstance(rec, dict):
            raise DataValidationError(
                f"{where}: expected the record of an active session ('active'), found none: "
                "this file holds a session with a fixed list of queries (drop --select)"
            )
        self.pool = queries_from_json(rec.get("pool"), f"{where}['pool']")
        self.pool.validate(f"{where}['pool']", dataset)
        self.pool_index = [int(i) for i in rec.get("pool_index", [])]
        self.target = int(rec.get("target", self.target))
        self.selector = self.factory(dataset, self.pool, self._model_strategy(), self.seed)

    def record(self) -> dict[str, Any]:
        """What the file keeps of the selection."""
        assert self.pool is not None
        return {
            "strategy": self.strategy,
            "target": self.target,
            "retrain_every": self.retrain_every,
            "pool": _pool_json(self.pool),
            "pool_index": list(self.pool_index),
        }

    def _model_strategy(self) -> str:
        return "uniform" if self.strategy == "random" else self.strategy

    # ------------------------------------------------------------------ after each answer

    def after_answer(self, session: Any) -> None:
        """Called with the session's lock held, after an answer was saved: start a retraining
        every ``retrain_every`` answers and keep at least one query queued."""
        answered = session.num_answered
        running = self.thread is not None and self.thread.is_alive()
        if (
            not running
            and self.strategy != "random"
            and answered - self.fitted_at >= self.retrain_every
            and len(self.pool_index) < self.target
        ):
            self.fitted_at = answered
            snapshot = session.labelled_queries()
            self.thread = threading.Thread(
                target=self._retrain, args=(session, snapshot), daemon=True
            )
            self.thread.start()
        if session.next_unanswered() is None:
            self._append(session, 1)

    def _retrain(self, session: Any, answered: PreferenceQueries) -> None:
        try:
            assert self.selector is not None
            self.selector.fit(answered)
        except Exception as e:  # the page goes on with the old scores
            print(
                f"robopref label-ui: retraining the selection ensemble failed "
                f"({type(e).__name__}: {e}); continuing with the previous choice",
                file=sys.stderr,
                flush=True,
            )
            return
        with session.lock:
            self.retrainings += 1
            self._append(session, self.retrain_every)

    def _append(self, session: Any, num: int) -> None:
        """Queue ``num`` more queries (the selector's best by its latest scores)."""
        num = min(num, self.target - len(self.pool_index))
        if num <= 0 or self.selector is None or self.pool is None:
            return
        idx = [int(i) for i in self.selector.pick(num, set(self.pool_index))]
        if not idx:
            return
        self.pool_index += idx
        session.extend_plan(self.pool.subset(np.asarray(idx, dtype=np.int64)))

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a retraining in progress (tests, and the end of a session)."""
        if self.thread is not None:
            self.thread.join(timeout)
