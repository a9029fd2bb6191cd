"""Preference alignment of a visual encoder on synthetic videos (tiny generated images)."""

import numpy as np
import pytest
import torch

from robopref.rewards.visual import (
    AlignConfig,
    VisualEncoder,
    align_encoder,
    tie_penalty,
    top1_accuracy,
    video_scores,
)


def _videos(goals, rng, T=6, size=16):
    """A white 4x4 square moving right from x=0 to x=goal*12 over T frames, on a random
    background colour per video (a nuisance the preferences do not care about)."""
    out = np.empty((len(goals), T, size, size, 3), dtype=np.uint8)
    for i, g in enumerate(goals):
        out[i] = rng.integers(0, 200, 3)
        for t, p in enumerate(np.linspace(0, g, T)):
            x = int(round(p * (size - 4)))
            out[i, t, 6:10, x : x + 4] = 255
    return out


def _queries(ids, goals, n, k, rng):
    items = np.stack([rng.choice(ids, k, replace=False) for _ in range(n)])
    return items, goals[items]


def test_alignment_raises_held_out_accuracy():
    rng = np.random.default_rng(0)
    goals = np.concatenate([np.ones(4), rng.uniform(0, 1, 40)])  # 4 expert anchors first
    videos = _videos(goals, rng)
    train, test = np.arange(4, 30), np.arange(30, 44)
    items, labels = _queries(train, goals, 40, 3, rng)
    val_items, val_labels = _queries(test, goals, 60, 2, rng)
    torch.manual_seed(0)
    enc = VisualEncoder("cnn", out_dim=16, cnn_width=8)
    cfg = AlignConfig(epochs=8, batch_size=10, lr=3e-3, device="cpu")
    hist = align_encoder(enc, videos, items, labels, [0, 1, 2, 3], cfg, val_items, val_labels)
    before, after = hist[0]["val_accuracy"], hist[-1]["val_accuracy"]
    assert hist[0]["epoch"] == -1 and len(hist) == 9
    print([round(h["val_accuracy"], 3) for h in hist])
    assert after >= 0.8, hist
    assert after > before + 0.15, hist
    # the aligned encoder's OT scores rank held-out videos like their goals
    s = video_scores(enc, videos[test], videos[:4])
    assert np.corrcoef(s, goals[test])[0, 1] > 0.7


def test_tie_penalty_and_accuracy_hand_values():
    scores = torch.tensor([[0.0, np.log(3.0), 5.0]])
    labels = torch.tensor([[1.0, 1.0, 2.0]])  # items 0 and 1 tied
    # p = sigmoid(0 - log 3) = 1/4 -> (0.5 - 0.25)^2 = 0.0625
    assert float(tie_penalty(scores, labels)) == pytest.approx(0.0625)
    assert float(tie_penalty(scores, torch.tensor([[1.0, 2.0, 3.0]]))) == 0.0
    s = np.array([[1.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    lab = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])  # third is a tie: not counted
    assert top1_accuracy(s, lab) == 0.5


def test_align_input_errors():
    enc = VisualEncoder("cnn", out_dim=4, cnn_width=4)
    v = np.zeros((3, 2, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="videos"):
        align_encoder(enc, v[0], np.zeros((1, 2), int), np.zeros((1, 2)), [0])
    with pytest.raises(ValueError, match="video indices"):
        align_encoder(enc, v, np.array([[0, 5]]), np.zeros((1, 2)), [0])
    with pytest.raises(ValueError, match="frames"):
        enc(torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match="backbone"):
        VisualEncoder("vit")


def test_resnet18_without_torchvision_or_with_local_weights(tmp_path):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="torchvision"):
            VisualEncoder("resnet18")
        return
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    enc = VisualEncoder("resnet18", out_dim=32, weights_path=str(path))
    assert enc.embed(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 32)


def test_encoder_checkpoint_round_trip(tmp_path):
    import torch

    from robopref.rewards.visual import VisualEncoder

    torch.manual_seed(3)
    enc = VisualEncoder("cnn", out_dim=8, cnn_width=4)
    frames = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    enc.save(tmp_path / "enc.pt")
    loaded = VisualEncoder.load(tmp_path / "enc.pt")
    assert loaded.init_kwargs == enc.init_kwargs
    np.testing.assert_array_equal(loaded.embed(frames), enc.embed(frames))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        VisualEncoder.load(tmp_path / "bad.pt")


def test_preferred_anchor_split_and_alignment():
    from robopref.rewards.visual import _split_preferred

    items = np.array([[5, 6, 7], [8, 9, 10]])
    labels = np.array([[0.0, 2.0, 1.0], [1.0, 1.0, 0.0]])  # second query: tie at the top
    rest, rest_labels, anchors = _split_preferred(items, labels)
    np.testing.assert_array_equal(anchors, [6, 8])
    np.testing.assert_array_equal(rest, [[5, 7], [9, 10]])
    np.testing.assert_array_equal(rest_labels, [[0.0, 1.0], [1.0, 0.0]])

    rng = np.random.default_rng(0)
    goals = np.concatenate([np.ones(4), rng.uniform(0, 1, 40)])
    videos = _videos(goals, rng)
    items, labels = _queries(np.arange(4, 30), goals, 40, 3, rng)
    val_items, val_labels = _queries(np.arange(30, 44), goals, 60, 2, rng)
    torch.manual_seed(0)
    enc = VisualEncoder("cnn", out_dim=16, cnn_width=8)
    cfg = AlignConfig(anchor="preferred", epochs=8, batch_size=10, lr=3e-3, device="cpu")
    hist = align_encoder(enc, videos, items, labels, [0, 1, 2, 3], cfg, val_items, val_labels)
    assert (
        hist[-1]["val_accuracy"] >= 0.8 and hist[-1]["val_accuracy"] > hist[0]["val_accuracy"] + 0.1
    )
    with pytest.raises(ValueError, match="K >= 3"):
        align_encoder(enc, videos, val_items, val_labels, [0], cfg)
