"""PNG film strips and SVG path plots, checked pixel by pixel / point by point."""

from __future__ import annotations

import io

import numpy as np
import pytest

from robopref.data import Trajectory
from robopref.humans.media import encode_png, film_strip, find_image_key, path_svg

Image = pytest.importorskip("PIL.Image", reason="Pillow decodes the PNGs in this test")


@pytest.mark.parametrize("shape", [(5, 7, 3), (4, 9, 4), (6, 3, 1), (6, 3)])
def test_encode_png_round_trip(shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(img))))
    np.testing.assert_array_equal(decoded, img.reshape(decoded.shape))
    with pytest.raises(ValueError, match="expected uint8"):
        encode_png(img.astype(np.float32))


def test_film_strip_stacks_and_subsamples():
    frames = np.random.default_rng(1).integers(0, 256, (3, 600, 300, 3), dtype=np.uint8)
    strip, h, w = film_strip(frames)
    assert (h, w) == (200, 100) and strip.shape == (600, 100, 3)  # stride ceil(600 / 256) = 3
    np.testing.assert_array_equal(strip[200:400], frames[1, ::3, ::3])
    small = frames[:, :20, :10]
    strip, h, w = film_strip(small)
    np.testing.assert_array_equal(strip.reshape(3, 20, 10, 3), small)


def test_find_image_key():
    T = 4
    img = np.zeros((T, 8, 8, 3), np.uint8)
    t = Trajectory(
        {"state": np.zeros((T, 3)), "wrist": img, "agentview": img}, np.zeros((T, 1)), np.zeros(T)
    )
    assert find_image_key(t) == "agentview"
    assert find_image_key(Trajectory(np.zeros((T, 3)), np.zeros((T, 1)), np.zeros(T))) is None


def test_path_svg_positions_by_hand():
    # points at the corners of the bounds land at the plot corners: size 220, pad 14,
    # top 14 + 14 = 28; view 1 starts at x = 14 + 234 = 248.
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 4.0], [0.5, 1.0, 1.0]])
    svg, cursor = path_svg(pts, (np.zeros(3), np.array([1.0, 2.0, 4.0])))
    assert (
        svg.startswith("<svg") and svg.count("<polyline") == 2 and svg.count('class="cursor"') == 2
    )
    assert cursor[0] == [[14.0, 248.0], [234.0, 28.0], [124.0, 138.0]]  # (x, y) view
    assert cursor[1] == [[248.0, 248.0], [468.0, 28.0], [358.0, 193.0]]  # (x, z) view
    svg1, cur1 = path_svg(np.array([[0.0], [1.0]]), (np.zeros(1), np.ones(1)))
    assert cur1 == [[[14.0, 248.0], [234.0, 28.0]]] and "over time" in svg1
