"""VLA policies on local image-text-to-text models (tiny random Idefics3 / LLaVA folders):
the constrained action distribution, SFT / TPO / step-DPO / rollouts, peft adapters, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from robopref.data import Trajectory
from robopref.policies.vla import (
    VLAPolicy,
    VLMPolicy,
    apply_lora,
    batch_token_logprobs,
    load_vlm,
    save_random_vlm,
    sft_train,
    step_dpo_train,
    tpo_train,
)

FAMILIES = ["idefics3", "llava"]
INSTR = ["reach the goal", "press the button from the top"]


@pytest.fixture(scope="module", params=FAMILIES)
def folder(request, tmp_path_factory):
    torch.set_num_threads(1)
    return save_random_vlm(tmp_path_factory.mktemp(request.param), request.param, words=INSTR)


def _frames(n, seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _trajectory(T=3, seed=0, instruction=INSTR[0]):
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (T, 4)).astype(np.float32)
    return Trajectory({"image": _frames(T, seed)}, actions, np.zeros(T), instruction=instruction)


def _direct_logprobs(policy, frames, instructions, tokens):
    """log p(a_d | .) computed by hand from the model's full-vocabulary logits, one row at a
    time (no padding), with the softmax restricted to the action ids."""
    at = policy.action_tokenizer
    out = []
    for f, q, tok in zip(frames, instructions, tokens, strict=True):
        batch = policy.processor(
            text=[policy.prompt(q)], images=[[f]], return_tensors="pt", **policy.processor_kwargs
        )
        ids = torch.cat([batch.pop("input_ids"), torch.as_tensor(tok)[None, :-1]], 1)
        batch.pop("attention_mask")
        mask = torch.ones_like(ids)
        logits = policy.model(input_ids=ids, attention_mask=mask, **batch).logits[0]
        D = len(tok)
        steps = logits[-D:, at.start : at.vocab_size]
        logp = torch.log_softmax(steps, -1)[torch.arange(D), torch.as_tensor(tok) - at.start]
        out.append(logp)
    return torch.stack(out)


def test_loads_with_last_256_ids_and_chat_prompt(folder):
    policy = load_vlm(folder)
    assert isinstance(policy, VLMPolicy) and policy.obs_mode == "image"
    V = policy.tokenizer.vocab_size
    assert policy.action_tokenizer.start == V - 256 and V < len(policy.tokenizer)
    image_id = policy.processor.image_token_id
    assert image_id >= V  # the model's own added tokens stay outside the action ids
    text = policy.prompt(INSTR[0])
    assert "<image>" in text and "reach the goal" in text


def test_action_logprobs_equal_direct_computation_and_do_not_depend_on_padding(folder):
    policy = load_vlm(folder)
    frames = _frames(3, seed=1)
    instructions = [INSTR[0], INSTR[1], INSTR[0]]  # different prompt lengths: left padding
    tokens = policy.action_tokenizer.encode(np.random.default_rng(2).uniform(-1, 1, (3, 4)))
    with torch.no_grad():
        got = policy.action_token_logprobs(
            policy.to_obs(frames), instructions, torch.as_tensor(tokens)
        )
        want = _direct_logprobs(policy, frames, instructions, tokens)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert torch.all(got < 0) and got.shape == (3, 4)


def test_cached_greedy_decoding_matches_teacher_forced_argmax(folder):
    policy = load_vlm(folder)
    frames = _frames(2, seed=3)
    obs = policy.to_obs(frames)
    tokens = policy.predict_tokens(obs, INSTR)
    with torch.no_grad():
        logits = policy.action_logits(obs, INSTR, tokens[:, :-1])
    np.testing.assert_array_equal(
        (logits.argmax(-1) + policy.action_tokenizer.start).numpy(), tokens.numpy()
    )
    single = policy.act(frames[0], INSTR[0])
    assert single.shape == (4,)
    np.testing.assert_array_equal(single, policy.act(frames, INSTR)[0])


def test_sft_tpo_and_step_dpo_run_on_lora_with_reference_disabled_adapters(folder):
    policy = apply_lora(load_vlm(folder), rank=4)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("vision" in n for n in trainable)  # the LM only
    demos = [_trajectory(3, s, INSTR[s % 2]) for s in range(2)]
    before, _ = batch_token_logprobs(policy, demos)
    history = sft_train(policy, demos, epochs=10, batch_size=6, lr=3e-2, seed=0)
    after, _ = batch_token_logprobs(policy, demos)
    assert history[-1]["loss"] < history[0]["loss"]
    assert after.sum() > before.sum() + 1.0
    with torch.no_grad(), policy.reference():
        ref, _ = batch_token_logprobs(policy, demos)
    torch.testing.assert_close(ref, before)  # adapters disabled = the base model
    rows = tpo_train(policy, demos, [((0, 1), (1.0, 0.0))], epochs=2, lr=2e-2, beta=0.5)
    assert rows[-1]["margin"] > 0
    rows = step_dpo_train(policy, demos, [(0, 1)], epochs=1, lr=1e-2)
    assert np.isfinite(rows[0]["loss"])


def test_adapters_reload_through_plain_peft_and_from_pretrained(folder, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    policy = apply_lora(load_vlm(folder), rank=4)
    sft_train(policy, [_trajectory(3, 0)], epochs=3, batch_size=3, lr=5e-2)
    policy.save_adapters(tmp_path / "adapters")
    frames = _frames(2, seed=5)
    want = policy.act(frames, INSTR)

    base = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
    plain = PeftModel.from_pretrained(base, tmp_path / "adapters")
    again = VLMPolicy(plain, policy.processor, folder)
    np.testing.assert_array_equal(again.act(frames, INSTR), want)
    loaded = VLAPolicy.from_pretrained(folder, tmp_path / "adapters")
    np.testing.assert_array_equal(loaded.act(frames, INSTR), want)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_stacked_adapters_sft_then_tpo_reload(folder, tmp_path):
    policy = apply_lora(load_vlm(folder), rank=4)
    demos = [_trajectory(3, s, INSTR[s % 2]) for s in range(2)]
    sft_train(policy, demos, epochs=2, batch_size=6, lr=5e-2)
    policy.save_adapters(tmp_path / "sft")
    policy.merge_adapters(tmp_path / "sft")
    apply_lora(policy, rank=4)
    tpo_train(policy, demos, [((0, 1), (1.0, 0.0))], epochs=2, lr=5e-2, beta=1.0)
    policy.save_adapters(tmp_path / "tpo")
    frames = _frames(2, seed=6)
    loaded = VLAPolicy.from_pretrained(folder, tmp_path / "tpo")
    np.testing.assert_array_equal(loaded.act(frames, INSTR), policy.act(frames, INSTR))


def test_rollout_in_metaworld_with_camera_frames(folder):
    from robopref.policies.vla import EnvPool, PixelSettings, rollout

    policy = load_vlm(folder)
    pool = EnvPool(4, pixels=PixelSettings(size=32))
    try:
        trajs = rollout(policy, pool, "reach-v3", [0, 1], greedy=False, temperature=1.0)
    finally:
        pool.close()
    assert [len(t) for t in trajs] == [4, 4]
    assert trajs[0].observations["image"].shape == (4, 32, 32, 3)
    lp, mask = batch_token_logprobs(policy, trajs)
    assert mask.sum() == 2 * 4 * 4 and torch.isfinite(lp[mask]).all()


# ---- bad input ----------------------------------------------------------------------------------


def test_not_a_folder_and_not_an_image_text_to_text_model(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        load_vlm(tmp_path / "missing")
    with pytest.raises(ValueError, match="no config.json"):
        load_vlm(tmp_path)
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        tmp_path / "lm"
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"lm: a 'llama' model is not an image-text-to-text"):
        load_vlm(tmp_path / "lm")


def test_processor_that_does_not_match(tmp_path):
    idefics = save_random_vlm(tmp_path / "idefics", "idefics3", words=INSTR)
    llava = save_random_vlm(tmp_path / "llava", "llava", words=INSTR)
    for name in ("processor_config.json", "preprocessor_config.json", "chat_template.jinja"):
        if (llava / name).exists():
            shutil.copy(llava / name, idefics / name)
    with pytest.raises(ValueError, match=r"idefics: .*does not match the idefics3 model"):
        load_vlm(idefics)


def test_vocabulary_too_small_for_256_action_tokens(tmp_path):
    small = save_random_vlm(tmp_path / "small", "llava", words=INSTR, vocab_size=200)
    with pytest.raises(ValueError, match=r"small: vocabulary too small for 256 action tokens"):
        load_vlm(small)
    # 260 ids: the last 256 would hold the prompt's words
    tight = save_random_vlm(tmp_path / "tight", "llava", words=INSTR, vocab_size=260)
    policy = load_vlm(tight)
    with pytest.raises(ValueError, match=r"tight: instruction .* uses ids .* of the action"):
        policy.act(_frames(1), [INSTR[1]])


def test_adapters_for_another_base(tmp_path):
    a = save_random_vlm(tmp_path / "a", "llava", words=INSTR)
    b = save_random_vlm(tmp_path / "b", "llava", words=INSTR, text={"hidden_size": 48})
    policy = apply_lora(load_vlm(a), rank=2)
    policy.save_adapters(tmp_path / "ad")
    with pytest.raises(ValueError, match=r"ad: adapters for another base .*hidden_size 32 vs 48"):
        VLAPolicy.from_pretrained(b, tmp_path / "ad")
    with pytest.raises(ValueError, match=r"no adapter_config.json"):
        VLAPolicy.from_pretrained(a, tmp_path)
