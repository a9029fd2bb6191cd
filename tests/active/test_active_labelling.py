"""Active labelling: ``label select=disagreement`` with a simulated teacher, and ``label-ui
--select`` retraining its ensemble in the background while the page keeps serving queries."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from robopref.cli import main
from robopref.data import Trajectory, TrajectoryDataset, load_dataset, sample_queries, save_dataset
from robopref.humans import LabelSession
from robopref.humans.active import ActiveQueue
from robopref.rewards.active import ActiveSelector, active_labels
from robopref.teachers import make_teacher


def _dataset(n: int = 16, T: int = 30, seed: int = 0) -> TrajectoryDataset:
    rng = np.random.default_rng(seed)
    trajs = []
    for _ in range(n):
        s = (rng.normal(size=(T, 4)).cumsum(0) * 0.2).astype(np.float32)
        trajs.append(Trajectory(s, rng.normal(size=(T, 2)).astype(np.float32), s[:, 0]))
    return TrajectoryDataset(trajs)


def test_selector_picks_uniformly_before_fit_then_by_score():
    ds = _dataset()
    pool = sample_queries(ds, 40, k=2, segment_length=8, rng=np.random.default_rng(0))
    sel = ActiveSelector(ds, pool, "disagreement", epochs=5, seed=0)
    first = sel.pick(10, set())
    assert len(set(first.tolist())) == 10 and sel.scores is None
    labelled = make_teacher("oracle").label(ds, pool.subset(first))
    sel.fit(labelled)
    assert sel.scores is not None and sel.scores.shape == (40,)
    asked = set(first.tolist())
    nxt = sel.pick(5, asked)
    assert not asked & set(nxt.tolist())
    free = np.array(sorted(set(range(40)) - asked))
    best = free[np.argsort(-sel.scores[free], kind="stable")[:5]]
    np.testing.assert_array_equal(nxt, best)


def test_active_labels_asks_the_budget_in_rounds():
    ds = _dataset()
    pool = sample_queries(ds, 60, k=2, segment_length=8, rng=np.random.default_rng(0))
    rounds = []
    teacher = make_teacher("oracle")

    def label(q):
        rounds.append(q.num_queries)
        return teacher.label(ds, q)

    out = active_labels(ds, pool, label, 25, "entropy", retrain_every=10, epochs=3)
    assert rounds == [10, 10, 5] and out.num_queries == 25
    idx = out.metadata["selection"]["candidate_index"]
    assert len(set(idx)) == 25
    np.testing.assert_array_equal(out.traj_index, pool.traj_index[idx])


def test_label_command_select_disagreement(tmp_path, capsys):
    save_dataset(_dataset(), tmp_path / "d.h5")
    code = main(["label", str(tmp_path / "d.h5"), "select=disagreement", "num_queries=12",
                 "retrain_every=6", "segment_length=8"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    q = load_dataset(tmp_path / "d.h5").queries
    assert q.num_queries == 12 and q.metadata["selection"]["strategy"] == "disagreement"
    code = main(["label", str(tmp_path / "d.h5"), "select=greedy", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "select" in err


class _SlowSelector:
    """A selector whose retraining waits until the test lets it finish."""

    def __init__(self, pool):
        self.pool, self.scores = pool, None
        self.release, self.fitted = threading.Event(), []

    def fit(self, answered):
        self.fitted.append(answered.num_queries)
        assert self.release.wait(10)
        self.scores = np.arange(self.pool.num_queries, dtype=float)  # the last ones first

    def pick(self, num, asked=None):
        free = [i for i in range(self.pool.num_queries) if i not in (asked or set())]
        if self.scores is None:
            return np.array(free[:num])
        return np.array(sorted(free, key=lambda i: -self.scores[i])[:num])


def test_label_ui_session_retrains_in_the_background_without_blocking(tmp_path):
    save_dataset(_dataset(), tmp_path / "d.h5")
    made = []

    def factory(dataset, pool, strategy, seed):
        made.append(_SlowSelector(pool))
        return made[-1]

    active = ActiveQueue("disagreement", target=8, retrain_every=2, selector_factory=factory)
    s = LabelSession(tmp_path / "d.h5", num_queries=8, segment_length=8, active=active)
    sel = made[0]
    assert s.num_queries == 4 and s.progress()["total"] == 8  # 2 x retrain_every queued
    assert active.pool.num_queries == 80
    s.answer(0, "ranking", [1, 2])
    t0 = time.perf_counter()
    s.answer(1, "ranking", [2, 1])  # starts a retraining, which waits
    assert time.perf_counter() - t0 < 2 and sel.fitted == [2]
    s.answer(2, "equal")  # the page keeps answering the queue meanwhile
    s.answer(3, "cant_tell")
    # the queue ran dry before the retraining finished: one more by the old (uniform) choice
    assert s.num_queries == 5 and s.next_unanswered() == 4
    sel.release.set()
    active.wait(10)
    assert active.retrainings == 1 and s.num_queries == 7
    # the two appended by the ensemble: the highest-scored candidates
    assert active.pool_index[-2:] == [79, 78]
    s.answer(4, "ranking", [1, 2])
    active.wait(10)
    stored = load_dataset(tmp_path / "d.h5").queries.metadata["human_labels"]
    assert stored["active"]["pool_index"][:5] == active.pool_index[:5]
    assert len(stored["answered"]) == len(stored["active"]["pool_index"])
    # reopening continues with the same pool and asked list
    again = LabelSession(
        tmp_path / "d.h5",
        active=ActiveQueue("disagreement", 8, 2, factory),
    )
    assert again.active.pool_index == stored["active"]["pool_index"]
    assert again.next_unanswered() == 5


def test_label_ui_select_bad_input_is_one_line(tmp_path, capsys):
    from robopref.humans import main as humans_main

    save_dataset(_dataset(), tmp_path / "d.h5")
    for argv, cli in (
        (["label-ui", str(tmp_path / "d.h5"), "--select", "greedy"], main),
        (["label-ui", str(tmp_path / "d.h5"), "--select", "entropy", "--retrain-every", "0"], main),
        ([str(tmp_path / "d.h5"), "--select", "disagreement"], humans_main),  # no ensemble
    ):
        with pytest.raises(SystemExit) as e:
            cli(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert "--select" in err or "--retrain-every" in err
