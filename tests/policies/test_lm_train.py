"""End-to-end preference fine-tuning of a tiny GPT-2 on the synthetic counting preferences.

The policy starts from a random init and its reference is that same init, so the implicit reward
is 0 for every response at the start: held-out top-1 accuracy 0.25 (= 1/K) and pairwise 0.5.
The held-out prompts are (letter, count) pairs never seen in training.
"""

import warnings
from pathlib import Path

import pytest
import torch

from robopref.config import load_config
from robopref.policies.lm import (
    LMPreferenceTrainer,
    WordTokenizer,
    build_tiny_model,
    load_preference_jsonl,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "robopref" / "configs" / "lm" / "data"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def counting():
    train = load_preference_jsonl(DATA / "counting_train.jsonl")
    held = load_preference_jsonl(DATA / "counting_heldout.jsonl")
    return train, held, WordTokenizer.from_examples(train + held)


@pytest.mark.parametrize("loss", ["bt", "lipo_lambda"])
def test_training_ranks_held_out_responses(counting, loss):
    train, held, tok = counting
    trainer = LMPreferenceTrainer(
        build_tiny_model(len(tok), seed=0),
        tok,
        loss=loss,
        beta=0.1,
        lr=1e-3,
        batch_size=8,
        device="cpu",
        seed=0,
        progress=False,
    )
    before = trainer.evaluate(held)
    before_train = trainer.evaluate(train)
    history = trainer.train(train, epochs=20)
    after = trainer.evaluate(held)
    after_train = trainer.evaluate(train)

    assert before["reward_top1"] == 0.25 and before["reward_pair"] == 0.5  # s = 0: chance
    # chance is 0.25 / 0.5; margins leave room for float-rounding differences across BLAS builds
    assert after["reward_top1"] >= 0.75
    assert after["reward_pair"] >= 0.75
    # the policy itself now prefers better responses: higher-ranked ones gain likelihood
    # relative to lower-ranked ones, on training and held-out prompts
    for b, a in ((before, after), (before_train, after_train)):
        assert b["logp_top1"] < 0.35 and a["logp_top1"] >= 0.6
        assert a["logp_pair"] > b["logp_pair"] + 0.1
        assert a["logp_margin"] > b["logp_margin"] + 10.0  # nats
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]


def test_lora_trains_only_the_adapters(counting):
    from peft import LoraConfig

    train, held, tok = counting
    model = build_tiny_model(len(tok), seed=0)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True)
    trainer = LMPreferenceTrainer(
        model, tok, loss="bt", beta=0.1, lora=lora, lr=1e-2, device="cpu", progress=False
    )
    before = trainer.evaluate(held)
    assert before["reward_pair"] == 0.5  # adapters start at B = 0: policy == reference
    trainer.train(train, epochs=8)
    after = trainer.evaluate(held)

    trainable = {n for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert trainer.trainable_parameters() == 2 * 8 * (
        64 + 3 * 64
    )  # 2 layers x (A [8, 64] + B [192, 8])
    merged = trainer.policy.get_base_model().state_dict()
    for key, value in base.items():
        name = key.replace("c_attn.weight", "c_attn.base_layer.weight").replace(
            "c_attn.bias", "c_attn.base_layer.bias"
        )
        assert torch.equal(merged[name], value), f"base weight {key} changed"
    lora_b = [p for n, p in trainer.policy.named_parameters() if "lora_B" in n]
    assert all(p.abs().max() > 0 for p in lora_b)
    assert after["reward_pair"] > 0.75


def test_recipe_returns_its_result_and_is_reproducible(tmp_path, monkeypatch):
    from robopref.methods.lm import LMConfig, run
    from robopref.methods.result import RunResult

    monkeypatch.chdir(tmp_path)  # the config's data paths resolve against its own folder
    overrides = ["epochs=2", "progress=false", "tensorboard=true", "loss.name=listnet"]
    config = load_config(LMConfig, ROOT / "robopref" / "configs" / "lm" / "tiny.yaml", overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = run(config, tmp_path / "a")
        second = run(config, tmp_path / "b")

    assert load_config(LMConfig, tmp_path / "a" / "config.yaml") == config
    assert first.tensorboard == str(tmp_path / "a" / "tb")
    assert any((tmp_path / "a" / "tb").iterdir())
    before, after = first.rows
    assert [before["when"], after["when"]] == ["before", "after"]
    assert before["variant"] == "listnet" and before["seed"] == 0
    assert first.rows == second.rows
    assert before["reward_top1"] == 0.25
    assert after["reward_pair"] > before["reward_pair"]
    assert set(first.report.metrics) <= set(after) and first.report.group_by == ["variant", "when"]
    table = first.tables[0]
    assert [r["metric"] for r in table.rows][:2] == ["reward_top1", "reward_pair"]
    assert table.rows[1]["after"] == after["reward_pair"]
    summary = first.summary
    assert len(summary["history"]) == 2 and summary["num_eval_prompts"] == 24
    assert summary["trainable_params"] == summary["total_params"] > 0
    first.save(tmp_path / "a")
    assert RunResult.load(tmp_path / "a").rows == first.rows


@pytest.mark.gpu
def test_training_on_cuda(counting):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    train, held, tok = counting
    trainer = LMPreferenceTrainer(
        build_tiny_model(len(tok), seed=0), tok, loss="lipo_lambda", lr=1e-3, progress=False
    )
    assert trainer.device.type == "cuda"  # device="auto"
    assert trainer.evaluate(held)["reward_top1"] == 0.25
    trainer.train(train, epochs=20)
    assert trainer.evaluate(held)["reward_top1"] >= 0.8
