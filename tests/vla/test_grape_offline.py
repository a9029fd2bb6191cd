"""The ``grape_offline`` recipe on the LeRobot fixture (tiny LM and a tiny random VLM), and
``robopref vla-eval``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robopref.cli import main
from robopref.policies.vla import VLAPolicy, apply_lora, load_vlm, save_random_vlm

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "lerobot" / "v30_image"
CONFIG = REPO / "robopref" / "configs" / "grape" / "offline.yaml"
TASKS = ["pick up the cube", "push the cube left"]
FAST = ["sft.epochs=10", "learner.epochs=4", "labels.num_queries=60", f"dataset={FIXTURE}"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _rows(out: Path) -> dict[tuple[str, str], dict]:
    rows = json.loads((out / "results.json").read_text())["rows"]
    return {(r["policy"], r["split"]): r for r in rows}


def test_offline_config_runs_end_to_end_and_prints_its_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--quiet", "run", str(CONFIG), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "Preference alignment from a labelled dataset" in printed and "held-out" in printed
    rows = _rows(out)
    assert rows["sft", "held-out"]["accuracy"] == 0.5  # the reference itself: all ties
    assert rows["tpo", "train"]["accuracy"] > 0.8
    assert rows["tpo", "held-out"]["accuracy"] > 0.6
    assert rows["sft", "train"]["queries"] + rows["sft", "held-out"]["queries"] == 60
    # a rerun into the same folder reuses both checkpoints
    assert main(["--quiet", "run", str(CONFIG), "--out", str(out), *FAST]) == 0
    assert "making it again" not in capsys.readouterr().err


@pytest.mark.parametrize("learner", ["step_dpo", "rejection_sampling"])
def test_offline_on_a_vlm_with_other_learners_saves_loadable_adapters(tmp_path, learner):
    model = save_random_vlm(tmp_path / "vlm", "idefics3", words=TASKS)
    out = tmp_path / "run"
    args = [*FAST, f"model.path={model}", "model.obs_mode=image", "sft.epochs=2",
            "learner.epochs=1", "labels.num_queries=20", f"learner.name={learner}"]  # fmt: skip
    assert main(["--quiet", "run", str(CONFIG), "--out", str(out), *args]) == 0
    assert {p for p, _ in _rows(out)} == {"sft", learner}
    adapters = out / "checkpoints" / learner
    meta = json.loads((adapters / "robopref_vla.json").read_text())
    assert meta["act_dim"] == 3 and meta["stacked_on"] == ["../sft"]
    policy = VLAPolicy.from_pretrained(model, adapters)
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    action = policy.act(frame, TASKS[0])
    low, high = meta["action_bounds"]
    assert action.shape == (3,) and np.all(action >= np.array(low) - 1e-6)
    assert np.all(action <= np.array(high) + 1e-6)


def test_offline_bad_input_exits_2(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["run", str(CONFIG), "--out", out, *FAST, f"model.path={tmp_path}"]) == 2
    assert "model.path" in capsys.readouterr().err
    args = [*FAST, "labels.source=dataset"]
    assert main(["--quiet", "run", str(CONFIG), "--out", out, *args]) == 2
    err = capsys.readouterr().err
    assert "carries no preferences" in err and len(err.strip().splitlines()) == 1


def test_vla_eval_rolls_out_an_adapter_and_rejects_another_base(tmp_path, capsys):
    base = save_random_vlm(tmp_path / "llava", "llava", words=["reach the goal"])
    policy = apply_lora(load_vlm(base), rank=2)
    policy.save_adapters(tmp_path / "ad")
    args = ["vla-eval", "--base", str(base), "--adapters", str(tmp_path / "ad")]
    assert main([*args, "--episodes", "2", "--max-steps", "3", "--image-size", "32"]) == 0
    assert "reach-v3: success 0.000 ± 0.000 over 2 episodes" in capsys.readouterr().out
    other = save_random_vlm(tmp_path / "idefics", "idefics3", words=["reach the goal"])
    args[2] = str(other)
    assert main(args) == 2
    assert "adapters for another base" in capsys.readouterr().err


def test_grape_rounds_reject_a_vlm_folder_when_the_config_is_read(tmp_path):
    from pydantic import ValidationError

    from robopref.methods.grape.config import ModelConfig

    model = save_random_vlm(tmp_path / "vlm", "llava", words=TASKS)
    with pytest.raises(ValidationError, match="is an image-text-to-text model"):
        ModelConfig(path=str(model))
