"""Unit tests of the language-policy preference room: data loading, encoding, log-probs, metrics."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from robopref.policies.lm import (
    LMDataError,
    LMPreferenceTrainer,
    PreferenceExample,
    WordTokenizer,
    build_tiny_model,
    collate,
    encode_examples,
    load_preference_jsonl,
    ranking_metrics,
    sequence_logps,
    token_logps,
)

DATA = Path(__file__).resolve().parents[2] / "robopref" / "configs" / "lm" / "data"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- loader ------------------------------------------------------------------------------------


def test_shipped_counting_files_follow_the_rule():
    train = load_preference_jsonl(DATA / "counting_train.jsonl")
    held = load_preference_jsonl(DATA / "counting_heldout.jsonl")
    assert (len(train), len(held)) == (72, 24)
    assert not {e.prompt for e in train} & {e.prompt for e in held}
    for ex in train + held:
        _, letter, n, _ = ex.prompt.split()
        assert len(ex.responses) == 4
        for resp, score in zip(ex.responses, ex.scores):
            words = resp.split()
            assert set(words) == {letter}
            assert score == max(0, 3 - abs(len(words) - int(n)))
        assert sorted(ex.scores)[-1] == 3.0 and ex.scores.count(3.0) == 1


GOOD = {"prompt": "p", "responses": ["a", "b"], "scores": [1.0, 0.0]}


@pytest.mark.parametrize(
    "bad, field, expected",
    [
        ('{"prompt": "p", "responses": ["a", "b"], "scores": [1, 0]', "invalid JSON", ""),
        ('["p", ["a"], [1]]', "expected a JSON object", "list"),
        ('{"prompt": "p", "responses": ["a", "b"]}', "field 'scores' is missing", "'scores'"),
        ('{"prompt": 3, "responses": ["a", "b"], "scores": [1, 0]}', "field 'prompt'", "string"),
        ('{"prompt": "p", "responses": "a b", "scores": [1, 0]}', "field 'responses'", "strings"),
        ('{"prompt": "p", "responses": ["a"], "scores": [1]}', "field 'responses'", "found 1"),
        (
            '{"prompt": "p", "responses": ["a", "b"], "scores": [1, "x"]}',
            "field 'scores'",
            "numbers",
        ),
        (
            '{"prompt": "p", "responses": ["a", "b"], "scores": [1, NaN]}',
            "field 'scores'",
            "finite",
        ),
        (
            '{"prompt": "p", "responses": ["a", "b"], "scores": [true, 0]}',
            "field 'scores'",
            "numbers",
        ),
        (
            '{"prompt": "p", "responses": ["a", "b", "c"], "scores": [1, 0]}',
            "field 'scores': expected 3 scores",
            "found 2",
        ),
    ],
)
def test_loader_errors_name_file_line_and_field(tmp_path, bad, field, expected):
    path = tmp_path / "prefs.jsonl"
    # line 1 good, line 2 blank (skipped, but counted), line 3 bad
    path.write_text(json.dumps(GOOD) + "\n\n" + bad + "\n")
    with pytest.raises(LMDataError) as err:
        load_preference_jsonl(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: ")
    assert field in msg and expected in msg


def test_loader_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(LMDataError, match="no preference lines"):
        load_preference_jsonl(empty)
    with pytest.raises(LMDataError, match="does not exist"):
        load_preference_jsonl(tmp_path / "nope.jsonl")


def test_loader_keeps_varying_k_and_ignores_extra_keys(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        {"prompt": "x", "responses": ["a", "b", "c"], "scores": [2, 1, 0], "id": 7},
        {"prompt": "y", "responses": ["a", "b"], "scores": [0.5, 1.5]},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    examples = load_preference_jsonl(path)
    assert examples == [
        PreferenceExample("x", ("a", "b", "c"), (2.0, 1.0, 0.0)),
        PreferenceExample("y", ("a", "b"), (0.5, 1.5)),
    ]


# -- tokenisation, encoding, collation ---------------------------------------------------------


def test_encode_and_collate_mark_exactly_the_response_tokens():
    tok = WordTokenizer(["repeat", "a", "2", ":"])  # ids: repeat=4, a=5, 2=6, :=7
    assert tok.encode("repeat a 2 :") == [1, 4, 5, 6, 7]
    assert tok.encode("a zzz", add_special_tokens=False) == [5, 3]  # unknown word -> <unk>
    examples = [
        PreferenceExample("repeat a 2 :", ("a a", "a", "a a a"), (3.0, 2.0, 2.0)),
        PreferenceExample("a", ("a", "a a"), (0.0, 1.0)),
    ]
    batch = collate(encode_examples(examples, tok), pad_token_id=tok.pad_token_id)
    assert batch.input_ids.shape == (5, 9)  # longest row: 5 prompt + 3 response + EOS
    assert batch.input_ids[0].tolist() == [1, 4, 5, 6, 7, 5, 5, 2, 0]
    assert batch.response_mask[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0]
    assert batch.attention_mask[0].tolist() == [1, 1, 1, 1, 1, 1, 1, 1, 0]
    assert batch.input_ids[4].tolist() == [1, 5, 5, 5, 2, 0, 0, 0, 0]
    assert batch.response_mask[4].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert batch.index.tolist() == [0, 1, 2, 3, 4]  # K = 3: second prompt's rows are 3 and 4
    assert batch.mask.tolist() == [[True, True, True], [True, True, False]]
    assert batch.labels.tolist() == [[3.0, 2.0, 2.0], [0.0, 1.0, 0.0]]


def test_max_length_cuts_the_prompt_from_the_left():
    tok = WordTokenizer(["a", "b", "c", "d"])
    [enc] = encode_examples([PreferenceExample("a b c d", ("a", "a b"), (1, 0))], tok, max_length=5)
    assert enc.prompt_ids == (6, 7)  # "c d": 5 - len("a b" + EOS)
    assert enc.response_ids == ((4, 2), (4, 5, 2))


# -- log-probabilities -------------------------------------------------------------------------


class BigramLM(nn.Module):
    """logits[t] = log P[x_t]: a model whose next-token distribution is known by hand."""

    def __init__(self, probs):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(probs).log())

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def test_sequence_logps_equals_hand_sum():
    probs = [[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]
    model = BigramLM(probs)
    input_ids = torch.tensor([[0, 1, 2, 2], [0, 2, 1, 0]])
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    response = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])  # row 1: last slot is padding
    got = sequence_logps(model, input_ids, attention, response)
    want = [math.log(0.3) + math.log(0.6), math.log(0.25) + math.log(0.2)]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    logp, mask = token_logps(model, input_ids, attention, response)
    assert mask.tolist() == [[False, True, True], [True, True, False]]
    assert logp[1, 2].item() == 0.0
    with pytest.raises(ValueError, match=r"found \(2, 4\), \(2, 3\)"):
        sequence_logps(model, input_ids, attention[:, :3], response)


def test_sequence_logps_is_invariant_to_right_padding_on_gpt2():
    tok = WordTokenizer(list("abcdefg"))
    model = build_tiny_model(len(tok), seed=1).eval()
    examples = [PreferenceExample("a b", ("c d e f g", "c"), (1.0, 0.0))]
    both = collate(encode_examples(examples, tok))
    together = sequence_logps(model, both.input_ids, both.attention_mask, both.response_mask)
    for row in range(2):
        n = int(both.attention_mask[row].sum())
        alone = sequence_logps(
            model,
            both.input_ids[row : row + 1, :n],
            both.attention_mask[row : row + 1, :n],
            both.response_mask[row : row + 1, :n],
        )
        assert alone.item() == pytest.approx(together[row].item(), abs=1e-4)
    # and it is the sum of log-softmax over the response targets, computed directly
    logits = model(input_ids=both.input_ids[1:2, :5]).logits[0].log_softmax(-1)
    ids = both.input_ids[1, :5].tolist()  # <bos> a b c <eos>
    hand = logits[2, ids[3]] + logits[3, ids[4]]
    assert together[1].item() == pytest.approx(hand.item(), abs=1e-5)


# -- metrics -----------------------------------------------------------------------------------


def test_ranking_metrics_hand_values():
    labels = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0], [1.0, 0.0, 5.0, 0.0]])
    mask = torch.tensor([[True] * 4, [True] * 4, [True, True, False, False]])
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 0.0, 0.0], [2.0, 1.0, 9.0, 0.0]])
    m = ranking_metrics(scores, labels, mask)
    # top1: row 0 picks the worst (0); row 1 ties items 0 and 1 (1/2); row 2 ignores masked 9 (1)
    assert m["top1"] == pytest.approx((0 + 0.5 + 1) / 3)
    # pairs: row 0: 6 wrong; row 1: (0,1) tie 1/2, 4 right, (2,3) tie 1/2 -> 5; row 2: 1 right
    assert m["pair"] == pytest.approx((0 + 5 + 1) / 13)
    zero = ranking_metrics(torch.zeros(3, 4), labels, mask)
    assert zero == pytest.approx({"top1": (0.25 + 0.25 + 0.5) / 3, "pair": 0.5})


def test_scores_are_zero_at_start_and_padding_slots_are_masked():
    examples = [
        PreferenceExample("repeat a 2 :", ("a a", "a", "a a a"), (3.0, 2.0, 2.0)),
        PreferenceExample("repeat b 1 :", ("b", "b b"), (3.0, 2.0)),
    ]
    tok = WordTokenizer.from_examples(examples)
    trainer = LMPreferenceTrainer(
        build_tiny_model(len(tok)), tok, loss="bt", beta=0.5, device="cpu", progress=False
    )
    batch = collate(trainer.encode(examples))
    out = trainer.forward(batch)
    assert out["scores"].shape == (2, 3)
    assert torch.equal(out["scores"], torch.zeros(2, 3))
    assert out["logp"][1, 2].item() == 0.0 and out["logp"][1, 1].item() < 0
    assert out["ntokens"].tolist() == [[3, 2, 4], [2, 3, 0]]
    metrics = trainer.evaluate(examples)
    assert metrics["reward_top1"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert metrics["reward_pair"] == 0.5
    assert metrics["loss"] == pytest.approx(math.log(2), abs=1e-6)  # BT at s = 0


def test_ipo_gets_the_trainer_beta_and_unscaled_log_ratios():
    examples = [PreferenceExample("repeat a 2 :", ("a a", "a", "a a a"), (3.0, 2.0, 2.0))]
    tok = WordTokenizer.from_examples(examples)
    trainer = LMPreferenceTrainer(
        build_tiny_model(len(tok)), tok, loss="ipo", beta=0.25, device="cpu", progress=False
    )
    # at the start h_w - h_l = 0, so the loss is (0 - 1 / (2 beta))^2 = 4 for every pair
    assert trainer.evaluate(examples)["loss"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match=r"\['beta'\] are set by the trainer"):
        LMPreferenceTrainer(
            build_tiny_model(len(tok)), tok, loss="ipo", loss_options={"beta": 0.5}, device="cpu"
        )


def test_length_normalize_divides_each_log_ratio_by_its_token_count():
    examples = [
        PreferenceExample("repeat a 2 :", ("a a", "a", "a a a"), (3.0, 2.0, 2.0)),
        PreferenceExample("repeat b 1 :", ("b", "b b"), (3.0, 2.0)),
    ]
    tok = WordTokenizer.from_examples(examples)
    trainer = LMPreferenceTrainer(
        build_tiny_model(len(tok)), tok, loss="ipo", beta=0.5, device="cpu", progress=False
    )
    with torch.no_grad():  # move the policy away from its frozen reference copy
        for p in trainer.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = collate(trainer.encode(examples))
    summed = trainer.forward(batch)
    trainer.length_normalize = True
    averaged = trainer.forward(batch)
    n = summed["ntokens"]
    assert summed["scores"].abs()[n > 0].min() > 1e-4
    expected = torch.where(n > 0, summed["scores"] / n.clamp(min=1), torch.zeros_like(n).float())
    torch.testing.assert_close(averaged["scores"], expected, rtol=1e-5, atol=1e-7)
