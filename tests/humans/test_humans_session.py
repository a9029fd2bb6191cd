"""Human labelling session: graded labels, can't tell, resume, atomic locked saves, checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robopref.data import DataValidationError, PreferenceQueries, load_queries, save_queries
from robopref.data.locks import FileBusyError
from robopref.humans import FileChangedError, LabelSession, answered_queries, grades_from_ranks
from robopref.humans import session as session_mod

sys.path.insert(0, str(Path(__file__).parent))
from humans_factory import image_dataset, lock_held_by_another_process, vector_dataset  # noqa: E402


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
    before = path.read_bytes()
    s = LabelSession(path, k=2, num_queries=4, segment_length=6, seed=1)
    assert path.read_bytes() == before  # opening a session writes nothing
    assert load_queries(path) is None
    assert s.progress() == {"answered": 0, "total": 4, "next": 0, "done": False, "k": 2}

    s.answer(0, "ranking", [2, 1], seconds=3.25)
    s.answer(1, "equal")
    p = s.answer(3, "cant_tell")
    assert p == {"answered": 3, "total": 4, "next": 2, "done": False, "k": 2}
    q = load_queries(path)
    # only the answers with a preference are stored: no unanswered or "can't tell" ties
    assert q.num_queries == 2 and q.label_kind == "graded" and q.teacher == "human"
    np.testing.assert_array_equal(q.traj_index, s.queries.traj_index[[0, 1]])
    np.testing.assert_array_equal(q.labels, [[0, 1], [0.5, 0.5]])
    np.testing.assert_array_equal(q.confidence, [1, 1])
    state = q.metadata["human_labels"]
    assert state["version"] == 2 and state["rows"] == [0, 1]
    assert state["answered"] == [True, True, False, True]
    assert state["answers"][0]["choice"] == "ranking" and state["answers"][0]["ranks"] == [2, 1]
    assert state["answers"][0]["seconds"] == 3.25
    assert state["answers"][3]["choice"] == "cant_tell" and state["answers"][2] is None
    assert state["plan"]["traj_index"] == s.queries.traj_index.tolist()

    used = answered_queries(q)  # answered, without "can't tell": what the file stores
    np.testing.assert_array_equal(used.traj_index, q.traj_index)
    with_cant_tell = answered_queries(q, include_cant_tell=True)
    np.testing.assert_array_equal(with_cant_tell.traj_index, s.queries.traj_index[[0, 1, 3]])
    np.testing.assert_array_equal(with_cant_tell.confidence, [1, 1, 0])

    again = LabelSession(path, k=3, num_queries=99)  # resumes; k / num_queries ignored
    assert again.next_unanswered() == 2 and again.num_queries == 4 and again.queries.k == 2
    np.testing.assert_array_equal(again.queries.traj_index, s.queries.traj_index)
    np.testing.assert_array_equal(again.queries.confidence, [1, 1, 0, 0])
    assert again.answer(2, "ranking", [1, 2])["done"] is True
    q = load_queries(path)
    assert q.metadata["human_labels"]["rows"] == [0, 1, 2]
    np.testing.assert_array_equal(q.labels, [[0, 1], [0.5, 0.5], [1, 0]])
    assert q.preferred_index()[0] == 1


def test_version_1_files_resume_and_lose_their_unanswered_ties(tmp_path):
    # Version 1 stored every query, unanswered ones as labels 0 / confidence 0.
    path = tmp_path / "d.h5"
    image_dataset(path)
    answers = [{"choice": "ranking", "ranks": [2, 1], "seconds": 1.0, "time": "t"}, None, None]
    v1 = PreferenceQueries(
        np.array([[0, 1], [2, 3], [1, 4]]), np.array([[0, 2], [1, 1], [3, 0]]), 6,
        labels=[[0, 1], [0, 0], [0, 0]], confidence=[1, 0, 0], label_kind="graded",
        teacher="human",
        metadata={"human_labels": {"version": 1, "answered": [True, False, False],
                                   "answers": answers}},
    )  # fmt: skip
    save_queries(path, v1)
    s = LabelSession(path)
    assert s.num_queries == 3 and s.next_unanswered() == 1
    s.answer(2, "equal")
    q = load_queries(path)
    np.testing.assert_array_equal(q.traj_index, [[0, 1], [1, 4]])
    np.testing.assert_array_equal(q.labels, [[0, 1], [0.5, 0.5]])
    assert q.metadata["human_labels"]["version"] == 2


def test_broken_session_state_is_a_clear_error(tmp_path):
    path = tmp_path / "d.h5"
    image_dataset(path)
    s = LabelSession(path, num_queries=2, segment_length=6)
    s.answer(0, "equal")
    q = load_queries(path)
    q.metadata["human_labels"]["answers"][0] = {"choice": "left"}
    save_queries(path, q)
    with pytest.raises(DataValidationError, match=r"\['answers'\]\[0\]: answer: field 'choice'"):
        LabelSession(path)
    q.metadata["human_labels"]["plan"] = {"traj_index": [[0, 1]]}
    save_queries(path, q)
    with pytest.raises(DataValidationError, match=r"\['plan'\]: expected traj_index"):
        LabelSession(path)


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
    s.answer(1, "equal")
    before = path.read_bytes()
    for args, field in [
        ((3, "equal"), "query"),
        ((-1, "equal"), "query"),
        ((True, "equal"), "query"),
        (("0", "equal"), "query"),
        ((0.0, "equal"), "query"),
        ((10**400, "equal"), "query"),
        ((0, "left"), "choice"),
        ((0, ["equal"]), "choice"),
        ((0, "ranking", [1, 3]), "ranks"),
        ((0, "ranking", None), "ranks"),
        ((0, "ranking", [1]), "ranks"),
        ((0, "ranking", [1, True]), "ranks"),
        ((0, "ranking", [1.0, 2]), "ranks"),
        ((0, "equal", [1, 2]), "ranks"),
        ((0, "cant_tell", []), "ranks"),
        ((0, "equal", None, float("nan")), "seconds"),
        ((0, "equal", None, float("inf")), "seconds"),
        ((0, "equal", None, -0.5), "seconds"),
        ((0, "equal", None, 10**400), "seconds"),
        ((0, "equal", None, 1e300), "seconds"),
        ((0, "equal", None, True), "seconds"),
        ((0, "equal", None, "3"), "seconds"),
    ]:
        with pytest.raises(DataValidationError, match=f"field '{field}'"):
            s.answer(*args)
    assert path.read_bytes() == before and s.num_answered == 1
    assert s.answer(0, "equal", None, 0)["answered"] == 2  # 0 s and ints are fine


def test_failed_save_keeps_memory_and_file_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "d.h5"
    image_dataset(path)
    s = LabelSession(path, num_queries=3, segment_length=6)
    s.answer(1, "equal")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(session_mod, "save_queries", boom)
    with pytest.raises(OSError):
        s.answer(0, "ranking", [1, 2])
    assert s.num_answered == 1 and s.queries.confidence[0] == 0
    assert path.read_bytes() == before
    monkeypatch.undo()
    s.answer(0, "ranking", [1, 2])  # the session goes on
    assert load_queries(path).metadata["human_labels"]["answered"] == [True, True, False]


def test_busy_file_refuses_the_answer(tmp_path):
    path = tmp_path / "d.h5"
    image_dataset(path)
    s = LabelSession(path, num_queries=3, segment_length=6)
    with lock_held_by_another_process(path):  # e.g. a `robopref label` run
        with pytest.raises(FileBusyError, match="cannot save labels now"):
            s.answer(0, "equal")
    assert load_queries(path) is None and s.num_answered == 0
    s.answer(0, "equal")
    assert load_queries(path).num_queries == 1


def test_a_file_rewritten_by_someone_else_is_never_overwritten(tmp_path):
    path = tmp_path / "d.h5"
    image_dataset(path)
    s = LabelSession(path, num_queries=3, segment_length=6)
    s.answer(0, "equal")
    teacher = PreferenceQueries(
        np.array([[0, 1]]), np.array([[0, 0]]), 5, labels=[[1, 0]], label_kind="graded",
        teacher="oracle",
    )  # fmt: skip
    save_queries(path, teacher)  # e.g. `robopref label --overwrite` between two answers
    with pytest.raises(FileChangedError, match="NOT saved"):
        s.answer(1, "equal")
    assert load_queries(path).teacher == "oracle"


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
    assert s.num_queries == 3 and load_queries(path).teacher == "oracle"  # not yet replaced
    s.answer(2, "ranking", [2, 1])
    assert load_queries(path).teacher == "human" and load_queries(path).num_queries == 1
    image_dataset(tmp_path / "fresh.h5")
    with pytest.raises(DataValidationError, match=r"segment_length: expected <= 12"):
        LabelSession(tmp_path / "fresh.h5", segment_length=13)


def test_humans_room_does_not_import_torch():
    code = "import sys, robopref.humans; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_labels_appended_while_a_session_runs_are_kept(tmp_path):
    from robopref.cli import main

    path = tmp_path / "d.h5"
    vector_dataset(path)
    s = LabelSession(path, num_queries=4, segment_length=5)
    s.answer(0, "ranking", [1, 2])
    # `robopref label --append` between two answers of the same session
    assert main(["label", str(path), "--append", "num_queries=20", "segment_length=5"]) == 0
    appended = load_queries(path)
    assert appended.num_queries == 21 and appended.teacher == "human+oracle"
    s.answer(1, "ranking", [2, 1])
    q = load_queries(path)
    assert q.num_queries == 22 and q.teacher == "human+oracle"
    np.testing.assert_array_equal(q.labels[:2], [[1, 0], [0, 1]])  # the session's, in order
    for f in ("traj_index", "start", "labels", "confidence"):  # the 20 appended, unchanged
        np.testing.assert_array_equal(getattr(q, f)[2:], getattr(appended, f)[1:])
    assert q.metadata["appended"][0]["first_query"] == 2  # moved behind the session's rows
    assert answered_queries(q).num_queries == 22

    # a restarted session keeps them too
    s = LabelSession(path)
    assert s.num_answered == 2
    s.answer(2, "equal")
    q = load_queries(path)
    assert q.num_queries == 23 and q.metadata["human_labels"]["rows"] == [0, 1, 2]
    np.testing.assert_array_equal(q.labels[3:], appended.labels[1:])
    np.testing.assert_array_equal(q.labels[2], [0.5, 0.5])
