"""Regenerate the synthetic counting preference set (``python tests/data_files/lm/make_counting.py``)
into ``robopref/configs/lm/data/``, where the packaged ``lm/tiny`` config reads it.

Prompt ``"repeat <letter> <n> :"``; the K = 4 responses repeat the letter m times for the true
count m = n and the three nearest wrong counts (m >= 1). Graded label = max(0, 3 - |m - n|):
the right count scores 3, off-by-one 2, off-by-two 1. Prompts are (letter, count) pairs; the
held-out file holds pairs never seen in training (every count and letter still appears in
training), so ranking them right needs the rule "stop after n", not memorisation.
"""

import json
import random
from pathlib import Path

LETTERS = "abcdefghijklmnop"  # 16 letters
COUNTS = range(1, 7)  # 1..6
K = 4
HELD_OUT = 24
SEED = 0


def line(letter: str, n: int, rng: random.Random) -> dict:
    wrong = sorted((m for m in range(1, max(COUNTS) + 3) if m != n), key=lambda m: (abs(m - n), m))
    counts = [n, *wrong[: K - 1]]
    rng.shuffle(counts)
    return {
        "prompt": f"repeat {letter} {n} :",
        "responses": [" ".join([letter] * m) for m in counts],
        "scores": [float(max(0, 3 - abs(m - n))) for m in counts],
    }


def main() -> None:
    rng = random.Random(SEED)
    pairs = [(c, n) for c in LETTERS for n in COUNTS]
    while True:
        rng.shuffle(pairs)
        held, train = pairs[:HELD_OUT], pairs[HELD_OUT:]
        if {n for _, n in train} == set(COUNTS) and {c for c, _ in train} == set(LETTERS):
            break
    here = Path(__file__).resolve().parents[3] / "robopref" / "configs" / "lm" / "data"
    for name, subset in (("counting_train.jsonl", train), ("counting_heldout.jsonl", held)):
        with open(here / name, "w") as f:
            for c, n in sorted(subset):
                f.write(json.dumps(line(c, n, rng)) + "\n")


if __name__ == "__main__":
    main()
