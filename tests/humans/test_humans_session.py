"""Human labelling session: graded labels, can't tell, resume, atomic saves, file checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robopref.data import DataValidationError, PreferenceQueries, load_queries, save_queries
from robopref.humans import LabelSession, answered_queries, grades_from_ranks
from robopref.humans import session as session_mod

sys.path.insert(0, str(Path(__file__).parent))
from humans_factory import image_dataset, vector_dataset  # noqa: E402


@pytest.mark.parametrize(
    "ranks, grades",
    [
        ([1, 2], [1.0, 0.0]),
        ([2, 1], [0.0, 1.0]),
        ([1, 1], [0.5, 0.5]),
        ([2, 1, 3], [1.0, 2.0, 0.0]),
        ([1, 2, 2], [2.0, 0.5, 0.5]),
        ([2, 1, 2], [0.5, 2.0, 0.5]),
        ([1, 1, 1, 4], [2.0, 2.0, 2.0, 0.0]),
    ],
)
def test_grades_from_ranks_match_the_teachers_convention(ranks, grades):
    np.testing.assert_array_equal(grades_from_ranks(np.array(ranks)), grades)


def test_new_session_answers_and_resume(tmp_path):
    path = tmp_path / "d.h5"
    image_dataset(path)
    s = LabelSession(path, k=2, num_queries=4, segment_length=6, seed=1)
    q = load_queries(path)  # written at once, all unanswered
    assert q.num_queries == 4 and q.label_kind == "graded" and q.teacher == "human"
    assert (q.confidence == 0).all() and (q.labels == 0).all()
    assert q.metadata["human_labels"]["answered"] == [False] * 4
    assert s.progress() == {"answered": 0, "total": 4, "next": 0, "done": False, "k": 2}

    s.answer(0, "ranking", [2, 1], seconds=3.25)
    s.answer(1, "equal")
    p = s.answer(3, "cant_tell")
    assert p == {"answered": 3, "total": 4, "next": 2, "done": False, "k": 2}
    q = load_queries(path)
    np.testing.assert_array_equal(q.labels, [[0, 1], [0.5, 0.5], [0, 0], [0.5, 0.5]])
    np.testing.assert_array_equal(q.confidence, [1, 1, 0, 0])
    state = q.metadata["human_labels"]
    assert state["answered"] == [True, True, False, True]
    assert state["answers"][0]["choice"] == "ranking" and state["answers"][0]["ranks"] == [2, 1]
    assert state["answers"][0]["seconds"] == 3.25
    assert state["answers"][3]["choice"] == "cant_tell" and state["answers"][2] is None

    used = answered_queries(q)  # answered, without "can't tell"
    np.testing.assert_array_equal(used.traj_index, q.traj_index[[0, 1]])
    assert answered_queries(q, include_cant_tell=True).num_queries == 3

    again = LabelSession(path, k=3, num_queries=99)  # resumes; k / num_queries ignored
    assert again.next_unanswered() == 2 and again.num_queries == 4 and again.queries.k == 2
    np.testing.assert_array_equal(again.queries.traj_index, s.queries.traj_index)
    assert again.answer(2, "ranking", [1, 2])["done"] is True
    np.testing.assert_array_equal(load_queries(path).labels[2], [1, 0])
    assert load_queries(path).preferred_index()[0] == 1


def test_k3_ranking_with_ties(tmp_path):
    path = tmp_path / "v.h5"
    vector_dataset(path)
    s = LabelSession(path, k=3, num_queries=2, segment_length=5)
    s.answer(0, "ranking", [2, 1, 2])
    s.answer(1, "equal")
    q = load_queries(path)
    np.testing.assert_array_equal(q.labels, [[0.5, 2.0, 0.5], [1.0, 1.0, 1.0]])


def test_bad_answers_are_rejected_and_nothing_is_written(tmp_path):
    path = tmp_path / "d.h5"
    image_dataset(path)
    s = LabelSession(path, num_queries=3, segment_length=6)
    before = path.read_bytes()
    for args, field in [
        ((3, "equal"), "query"),
        ((True, "equal"), "query"),
        ((0, "left"), "choice"),
        ((0, "ranking", [1, 3]), "ranks"),
        ((0, "ranking", None), "ranks"),
        ((0, "ranking", [1]), "ranks"),
    ]:
        with pytest.raises(DataValidationError, match=f"field '{field}'"):
            s.answer(*args)
    assert path.read_bytes() == before and s.num_answered == 0


def test_failed_save_keeps_memory_and_file_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "d.h5"
    image_dataset(path)
    s = LabelSession(path, num_queries=3, segment_length=6)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(session_mod, "save_queries", boom)
    with pytest.raises(OSError):
        s.answer(0, "ranking", [1, 2])
    assert s.num_answered == 0 and s.queries.confidence[0] == 0
    assert load_queries(path).metadata["human_labels"]["answered"] == [False] * 3


def test_existing_queries_unlabelled_teacher_and_overwrite(tmp_path):
    path = tmp_path / "d.h5"
    image_dataset(path)
    picked = PreferenceQueries(np.array([[0, 1], [2, 3]]), np.array([[0, 2], [1, 1]]), 5)
    save_queries(path, picked)  # e.g. from select_queries: label_kind "none"
    s = LabelSession(path, num_queries=10)
    np.testing.assert_array_equal(s.queries.traj_index, picked.traj_index)
    assert s.num_queries == 2
    labelled = PreferenceQueries(
        picked.traj_index, picked.start, 5, labels=[[1, 0], [0, 1]], label_kind="graded",
        teacher="oracle",
    )  # fmt: skip
    save_queries(path, labelled)
    with pytest.raises(DataValidationError, match=r"labelled by 'oracle' \(pass overwrite=True"):
        LabelSession(path)
    s = LabelSession(path, num_queries=3, segment_length=6, overwrite=True)
    assert s.num_queries == 3 and load_queries(path).teacher == "human"
    image_dataset(tmp_path / "fresh.h5")
    with pytest.raises(DataValidationError, match=r"segment_length: expected <= 12"):
        LabelSession(tmp_path / "fresh.h5", segment_length=13)


def test_humans_room_does_not_import_torch():
    code = "import sys, robopref.humans; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
