"""VLA policy: action tokenisation, trajectory log-probabilities, LoRA, adapters, SFT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopref.data import Trajectory
from robopref.policies.vla import (
    ActionTokenizer,
    apply_lora,
    batch_token_logprobs,
    build_tiny_vla,
    load_adapters,
    load_policy,
    save_adapters,
    save_policy,
    sft_train,
    tpo_train,
    trainable_parameters,
    trajectory_logprob,
)

INSTR = ["press the button", "open the drawer"]


def _policy(obs_mode="state", seed=0, **kw):
    torch.set_num_threads(1)
    return build_tiny_vla(INSTR, obs_mode=obs_mode, hidden_size=32, n_layers=1, seed=seed, **kw)


def _trajectory(T=3, seed=0, instruction="press the button", image=False):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(T, 39)).astype(np.float32)
    obs = states
    if image:
        obs = {"state": states, "image": rng.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8)}
    actions = rng.uniform(-1, 1, size=(T, 4)).astype(np.float32)
    return Trajectory(obs, actions, np.zeros(T), instruction=instruction)


# ---- action tokenisation ----------------------------------------------------------------------


def test_action_tokenizer_bins_and_ids():
    tok = ActionTokenizer(vocab_size=300, n_bins=256)
    assert tok.start == 44
    ids = tok.encode(np.array([-1.0, -0.999, 0.0, 0.999, 1.0, 5.0, -5.0]))
    # bin k covers [-1 + k/128, -1 + (k+1)/128); 1.0 and values above fall in the last bin
    np.testing.assert_array_equal(ids - 44, [0, 0, 128, 255, 255, 255, 0])
    np.testing.assert_allclose(
        tok.decode(np.array([44, 172, 299])), [-1 + 1 / 256, 1 / 256, 1 - 1 / 256]
    )
    with pytest.raises(ValueError, match="action token ids"):
        tok.decode(np.array([43]))


def test_action_tokenizer_round_trip():
    tok = ActionTokenizer(vocab_size=1000)
    a = np.random.default_rng(0).uniform(-1.2, 1.2, size=(500, 4))
    back = tok.decode(tok.encode(a))
    assert np.abs(back - np.clip(a, -1, 1)).max() <= 1 / 256 + 1e-6
    ids = np.arange(1000 - 256, 1000)
    np.testing.assert_array_equal(tok.encode(tok.decode(ids)), ids)


def test_policy_action_tokens_are_last_vocab_ids():
    policy = _policy()
    V = policy.tokenizer.vocab_size
    assert policy.action_tokenizer.start == V - 256
    assert policy.tokenizer.inverse[V - 256] == "<act_0>"
    assert policy.lm.get_input_embeddings().num_embeddings == V


# ---- log-probabilities ------------------------------------------------------------------------


@pytest.mark.parametrize("obs_mode", ["state", "image+state"])
def test_trajectory_logprob_equals_manual_token_sum(obs_mode):
    image = "image" in obs_mode
    policy = _policy(obs_mode, image_size=16).eval()
    traj = _trajectory(T=2, image=image)
    tokens = policy.action_tokenizer.encode(traj.actions)
    prompt = policy.tokenizer.encode(policy.prompt_template.format(instruction=traj.instruction))
    embed = policy.lm.get_input_embeddings()
    manual = 0.0
    with torch.no_grad():
        for t in range(2):
            obs = {"state": torch.as_tensor(traj.state[t : t + 1])}
            if image:
                obs["image"] = torch.as_tensor(traj.observations["image"][t : t + 1])
            prefix = policy.obs_encoder(obs)
            for d in range(4):
                ids = torch.tensor([prompt])
                seq = [embed(ids), prefix]
                if d:
                    seq.append(embed(torch.as_tensor(tokens[t : t + 1, :d])))
                logits = policy.lm(inputs_embeds=torch.cat(seq, 1)).logits[0, -1]
                action_logits = logits[-256:]  # the last 256 vocabulary ids are the action tokens
                logp = action_logits - torch.logsumexp(action_logits, 0)
                manual += float(logp[tokens[t, d] - policy.action_tokenizer.start])
    with torch.no_grad():
        got = float(trajectory_logprob(policy, traj))
    assert got == pytest.approx(manual, abs=1e-4)
    assert got < 0


def test_batch_logprobs_padding_and_left_padded_prompts():
    policy = _policy().eval()
    short = _trajectory(T=2, seed=1, instruction="press the button")
    long = _trajectory(T=5, seed=2, instruction="open the drawer")
    with torch.no_grad():
        logp, mask = batch_token_logprobs(policy, [short, long])
        alone = [float(trajectory_logprob(policy, t)) for t in (short, long)]
    assert logp.shape == (2, 20) and mask.sum(1).tolist() == [8, 20]
    assert float(logp[0, 8:].abs().sum()) == 0.0
    np.testing.assert_allclose(logp.sum(1).numpy(), alone, atol=1e-4)


def test_bad_observation_shape_names_field():
    policy = _policy()
    with pytest.raises(ValueError, match=r"obs/state: expected shape \[N, 39\]"):
        policy.act(np.zeros((2, 7)), INSTR)
    with pytest.raises(ValueError, match="needs key 'image'"):
        _policy("image").act(np.zeros((2, 39)), INSTR)


def test_act_is_constrained_and_reproducible():
    policy = _policy()
    states = np.random.default_rng(0).normal(size=(6, 39))
    a1 = policy.act(states, INSTR * 3, greedy=False, generator=torch.Generator().manual_seed(3))
    a2 = policy.act(states, INSTR * 3, greedy=False, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(a1, a2)
    centres = policy.action_tokenizer.centres
    assert a1.shape == (6, 4) and np.isin(a1, centres.astype(np.float32)).all()


# ---- SFT --------------------------------------------------------------------------------------


def test_sft_learns_state_conditioned_actions():
    # Two states -> two different action patterns; BC must reach high token accuracy.
    policy = _policy()
    rng = np.random.default_rng(0)
    trajs = []
    for k in range(8):
        s = rng.normal(size=(10, 39)).astype(np.float32)
        a = np.where(s[:, :4] > 0, 0.7, -0.7).astype(np.float32)
        trajs.append(Trajectory(s, a, np.zeros(10), instruction=INSTR[k % 2]))
    hist = sft_train(policy, trajs, epochs=60, batch_size=80, lr=3e-3)
    assert hist[0]["token_accuracy"] < 0.2
    assert hist[-1]["token_accuracy"] > 0.75  # ignoring the state caps it at 0.5
    assert hist[-1]["loss"] < hist[0]["loss"] / 4


# ---- LoRA -------------------------------------------------------------------------------------


def test_lora_trains_only_adapter_params():
    policy = apply_lora(_policy())
    names = list(trainable_parameters(policy))
    assert names and all("lora_" in n for n in names)
    assert all(any(p in n for p in ("q_proj", "k_proj", "v_proj", "o_proj")) for n in names)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trajs = [_trajectory(T=3, seed=s) for s in range(4)]
    tpo_train(policy, trajs, [((0, 1), (1, 0)), ((2, 3), (1, 0))], beta=1.0, epochs=2, lr=1e-2)
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(names)
    assert any("lora_B" in n for n in changed)


def test_lora_reference_is_the_base_policy():
    base = _policy()
    traj = _trajectory()
    with torch.no_grad():
        ref = float(trajectory_logprob(base, traj))
    policy = apply_lora(base)
    for n, p in policy.named_parameters():
        if "lora_B" in n:
            p.data.normal_()
    with torch.no_grad():
        adapted = float(trajectory_logprob(policy, traj))
        with policy.reference():
            again = float(trajectory_logprob(policy, traj))
    assert again == pytest.approx(ref, abs=1e-5)
    assert abs(adapted - ref) > 1e-2


def test_adapter_and_policy_save_load_round_trip(tmp_path):
    base = _policy(seed=4)
    save_policy(base, tmp_path / "sft.pt")
    policy = apply_lora(base, rank=4, train_obs_encoder=True)
    trajs = [_trajectory(T=3, seed=s) for s in range(4)]
    tpo_train(policy, trajs, [((0, 1), (1, 0)), ((2, 3), (1, 0))], beta=1.0, epochs=3, lr=1e-2)
    save_adapters(policy, tmp_path / "adapter.pt")
    fresh = load_policy(tmp_path / "sft.pt")
    with torch.no_grad():
        base_lp = float(trajectory_logprob(fresh, trajs[0]))
        load_adapters(fresh, tmp_path / "adapter.pt")
        expect = float(trajectory_logprob(policy, trajs[0]))
        got = float(trajectory_logprob(fresh, trajs[0]))
        with fresh.reference():
            ref_lp = float(trajectory_logprob(fresh, trajs[0]))
    assert got == pytest.approx(expect, abs=1e-5)
    assert abs(got - base_lp) > 1e-3
    assert ref_lp == pytest.approx(base_lp, abs=1e-5)
    assert fresh.lora_settings["rank"] == 4
    # adapters alone: far smaller than the whole policy
    assert (tmp_path / "adapter.pt").stat().st_size < (tmp_path / "sft.pt").stat().st_size
    assert not list(tmp_path.glob(".*.tmp"))


def test_pretrained_path_loads_local_checkpoint_and_round_trips(tmp_path):
    # A local Hugging Face folder (tokenizer + Llama) built offline stands in for a real VLA.
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from robopref.policies.vla import load_pretrained_vla

    words = ["<pad>", "<unk>", "<s>", "what", "action", "should", "the", "robot", "take", "to"]
    words += ["press", "button", "?"]
    vocab = {w: i for i, w in enumerate(words + [f"<a{k}>" for k in range(256)])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>"
    ).save_pretrained(tmp_path / "hf")
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    policy = load_pretrained_vla(tmp_path / "hf", seed=0)
    assert policy.action_tokenizer.start == len(words)  # the last 256 ids of the vocabulary
    traj = _trajectory(T=2)
    save_policy(policy, tmp_path / "policy.pt")
    again = load_policy(tmp_path / "policy.pt")
    with torch.no_grad():
        np.testing.assert_allclose(
            float(trajectory_logprob(again, traj)),
            float(trajectory_logprob(policy, traj)),
            atol=1e-5,
        )
    with pytest.raises(FileNotFoundError, match="model.path"):
        load_pretrained_vla(tmp_path / "missing")
