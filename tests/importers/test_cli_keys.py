"""`robopref import` key options and `robopref info` on a robomimic file (as robomimic's
converters write it: robot0_eef_pos, object, ... and no "state")."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from robopref.cli import main
from robopref.data import load_dataset

sys.path.insert(0, str(Path(__file__).parent))
from lerobot_factory import write_robomimic  # noqa: E402


@pytest.fixture
def lift(tmp_path):
    path = tmp_path / "lift.hdf5"
    return path, write_robomimic(path)


def test_info_lists_the_keys_of_a_robomimic_file(lift, capsys):
    path, _ = lift
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: robomimic, 3 episodes" in out
    assert "  robot0_eef_pos  [3] float64" in out
    assert "  object  [10] float32" in out
    assert "  agentview_image  [8, 8, 3] uint8 (image)" in out
    assert "filter keys (--filter-key): train, valid" in out


def test_import_with_state_keys_gives_a_state(lift, tmp_path, capsys):
    path, written = lift
    out = tmp_path / "lift.h5"
    args = ["import", str(path), str(out), "--state-keys", "robot0_eef_pos,object"]
    assert main([*args, "--image-keys", "none", "--filter-key", "train"]) == 0
    assert "2 episodes, 12 frames; observations state [13]" in capsys.readouterr().out
    ds = load_dataset(out)
    w = written["demo_2"]
    np.testing.assert_array_equal(
        ds[1].state, np.concatenate([w["obs/robot0_eef_pos"], w["obs/object"]], axis=1)
    )
    assert isinstance(ds[1].observations, np.ndarray)  # only "state" left
    # images chosen by --image-keys, other keys by --obs-keys
    out2 = tmp_path / "lift2.h5"
    assert main(["import", str(path), str(out2), "--obs-keys", "object",
                 "--image-keys", "agentview_image"]) == 0  # fmt: skip
    assert set(load_dataset(out2)[0].observations) == {"object", "agentview_image"}


def test_missing_or_wrong_keys_are_one_line_errors_and_write_nothing(lift, tmp_path, capsys):
    path, _ = lift
    out = tmp_path / "x.h5"
    for extra, msg in (
        (["--state-keys", "robot0_eef_pos,nope"], "data/demo_0/obs/nope: expected an observation"),
        (["--image-keys", "object"], "data/demo_0/obs/object: expected an image observation"),
        (["--filter-key", "test"], "mask/test: expected one of the filter keys ['train', 'valid']"),
    ):
        capsys.readouterr()
        assert main(["import", str(path), str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
        assert not out.exists()
