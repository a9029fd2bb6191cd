"""PEARL recipe end to end on a tiny Meta-World run: every variant produces its metrics."""

import json

import pytest

from robopref.cli import main
from robopref.config import load_config
from robopref.methods import pearl

EPISODES = (
    "{expert_episodes: 2, noisy_episodes: 1, noise_levels: [0.3, 1.0], goal_mismatch_episodes: 1, "
    "random_episodes: 2, other_task_episodes: 1, max_episode_steps: 60}"
)
TINY = [
    f"source={{tasks: [button-press-v3], {EPISODES[1:]}",
    f"target={{tasks: [button-press-wall-v3], seed: 1, {EPISODES[1:]}",
    "queries={segment_length: 10, source_pool: 40, source_queries: 200, target_pool: 40, "
    "target_queries: 150, eval_queries: 100}",
    "reward.hidden=[32,32]",
    "reward.trainer={epochs: 3, batch_size: 32}",
    "iql={steps: 100, batch_size: 64, hidden: [32, 32]}",
    "eval_episodes=2",
    "eval_max_steps=30",
    "variants=[pearl,gw_plain,sim,dis,oracle]",
]


def test_pearl_recipe_tiny(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "pearl/demo", *TINY, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["variant"]: r for r in results["rows"]}
    assert set(rows) == {"pearl", "gw_plain", "sim", "dis", "oracle"}
    assert rows["oracle"]["label_accuracy"] == 1.0  # scripted labels are the reference
    for r in rows.values():
        assert 0.0 <= r["label_accuracy"] <= 1.0 and 0.0 <= r["reward_accuracy"] <= 1.0
        assert 0.0 <= r["success_rate"] <= 1.0 and r["num_train_labels"] == 150
    # transferred labels beat a coin on this easy pair even at this size
    assert rows["gw_plain"]["label_accuracy"] > 0.55
    # the saved config reloads to the same typed config
    saved = load_config(pearl.Config, out / "config.yaml")
    assert saved.queries.target_queries == 150 and saved.variants[-1] == "oracle"
    assert "| pearl |" in (out / "report.md").read_text()


def test_pearl_rejects_unknown_variant(tmp_path, capsys):
    assert main(["run", "pearl/demo", "variants=[magic]", "--out", str(tmp_path)]) == 2
    assert "magic" in capsys.readouterr().err


@pytest.mark.slow
def test_pearl_demo_config(tmp_path):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
