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
    report = (out / "report.md").read_text()
    assert "| pearl |" in report and "label acc | reward acc | success ± SE (2 ep)" in report
    assert results["method"] == "pearl" and results["tensorboard"] == str(out / "tb")
    assert results["report"]["order"]["variant"] == ["pearl", "gw_plain", "sim", "dis", "oracle"]
    assert results["report"]["control"] == "shuffled"
    assert list((out / "tb").iterdir())  # the reward and policy logs


def _tiny_data(task: str, seed: int):
    from robopref.envs import CollectConfig, collect_dataset

    return collect_dataset(
        CollectConfig(tasks=[task], expert_episodes=2, noisy_episodes=1, noise_levels=[0.5],
                      goal_mismatch_episodes=0, random_episodes=2, other_task_episodes=0,
                      max_episode_steps=30, seed=seed),
        progress=False,
    )  # fmt: skip


def test_a_dataset_replaced_under_the_same_path_retrains_the_reward_and_policy(tmp_path, capsys):
    from robopref.data import save_dataset

    source, target = tmp_path / "source.h5", tmp_path / "target.h5"
    save_dataset(_tiny_data("button-press-v3", 0), source)
    save_dataset(_tiny_data("button-press-wall-v3", 1), target)
    out = tmp_path / "run"
    args = [
        "run", "configs/pearl/demo.yaml", f"source_dataset={source}", f"target_dataset={target}",
        "queries={segment_length: 10, source_pool: 20, source_queries: 40, target_pool: 20, "
        "target_queries: 40, eval_queries: 20}",
        "reward.hidden=[8]", "reward.trainer={epochs: 2, batch_size: 16}",
        "policy={name: filtered_bc, filtered_bc: {steps: 5, hidden: [8]}}",
        "eval_episodes=1", "eval_max_steps=5", "variants=[oracle]", "--out", str(out),
    ]  # fmt: skip
    reward = out / "ckpt" / "reward-oracle" / "last.pt"
    policy = out / "ckpt" / "filtered_bc-oracle" / "checkpoint.pt"
    assert main(args) == 0
    made = reward.read_bytes(), policy.read_bytes(), reward.stat().st_mtime_ns
    assert main(args) == 0  # the same files: both checkpoints are reused
    assert (reward.read_bytes(), policy.read_bytes(), reward.stat().st_mtime_ns) == made
    capsys.readouterr()
    save_dataset(_tiny_data("button-press-wall-v3", 2), target)  # other episodes, same path
    assert main(args) == 0
    assert "load[target]" in capsys.readouterr().err  # says why it makes it again
    assert reward.read_bytes() != made[0] and policy.read_bytes() != made[1]


def test_pearl_rejects_unknown_variant(tmp_path, capsys):
    assert main(["run", "pearl/demo", "variants=[magic]", "--out", str(tmp_path)]) == 2
    assert "magic" in capsys.readouterr().err


def test_pearl_rejects_cpl_before_any_work(tmp_path, capsys):
    args = ["run", "pearl/demo", "policy.name=cpl", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "override 'policy.name=cpl'" in err and "field 'policy.name'" in err
    assert "expected iql, awr or filtered_bc" in err and err.rstrip().endswith("found 'cpl'")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_pearl_demo_config(tmp_path):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    result = json.loads((tmp_path / "demo" / "results.json").read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert all(r["eval_episodes"] >= 30 for r in rows.values())
    # the success column can be read: the oracle is well above the shuffled control
    assert rows["oracle"]["success_rate"] - rows["shuffled"]["success_rate"] >= 0.3
    assert result["tables"][0]["note"].startswith("PEARL ")


def test_the_note_reads_the_success_column_against_the_control():
    from robopref.methods.pearl.results import per_variant, reading

    def row(variant, p, n=30, **kw):
        return {"variant": variant, "success_rate": p, "success_se": (p * (1 - p) / n) ** 0.5,
                "label_accuracy": 0.7, "reward_accuracy": 0.7, "wall_s": 1.0, **kw}  # fmt: skip

    rows = [row("pearl", 0.83), row("sim", 0.5), row("oracle", 1.0), row("shuffled", 0.4)]
    assert reading(per_variant(rows)) == (
        "PEARL 0.83 vs shuffled control 0.40 (oracle 1.00): "
        "the transferred labels carry the preference"
    )
    rows = [row("pearl", 0.5), row("oracle", 1.0), row("shuffled", 0.4)]
    assert reading(per_variant(rows)).endswith("not told apart from the control at this size")
    rows = [row("pearl", 0.9), row("oracle", 0.5), row("shuffled", 0.4)]
    assert "the oracle is not above the control" in reading(per_variant(rows))
    # permutations of the control: one table row, their mean
    rows = [row("pearl", 0.9), row("shuffled", 0.0, permutation=0), row("shuffled", 1.0)]
    table = per_variant(rows)
    assert [r["variant"] for r in table] == ["pearl", "shuffled (mean of 2)"]
    assert table[1]["success_rate"] == 0.5
