"""The labelling server over HTTP (no browser): query JSON, PNG frames, SVG paths, answers."""

from __future__ import annotations

import io
import json
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from robopref.data import DataValidationError, load_queries
from robopref.humans import make_server

sys.path.insert(0, str(Path(__file__).parent))
from humans_factory import image_dataset, vector_dataset  # noqa: E402


@pytest.fixture
def running():
    servers = []

    def start(*args, **kwargs):
        srv = make_server(*args, **kwargs)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers["Content-Type"], r.read()


def _post(srv, obj):
    req = urllib.request.Request(
        srv.url + "api/answer",
        json.dumps(obj).encode(),
        headers={"Content-Type": "application/json", "X-Robopref-Token": srv.token},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_image_queries_are_served_as_exact_film_strips(tmp_path, running):
    Image = pytest.importorskip("PIL.Image")
    ds = image_dataset(tmp_path / "d.h5")
    srv = running(tmp_path / "d.h5", num_queries=3, segment_length=6, seed=2)
    status, ctype, page = _get(srv.url)
    assert status == 200 and ctype.startswith("text/html") and b"btn-cant-tell" in page
    q = json.loads(_get(srv.url + "api/query/1")[2])
    assert q["fps"] == 5.0 and q["k"] == 2 and q["answered"] is False
    queries = srv.session.queries
    for k, item in enumerate(q["items"]):
        ti, st = int(queries.traj_index[1, k]), int(queries.start[1, k])
        assert item["kind"] == "frames" and (item["trajectory"], item["start"]) == (ti, st)
        assert (item["frame_height"], item["frame_width"], item["frames"]) == (16, 12, 6)
        _, ctype, png = _get(srv.url + item["url"].lstrip("/"))
        strip = np.asarray(Image.open(io.BytesIO(png)))
        expected = ds[ti].observations["image"][st : st + 6].reshape(6 * 16, 12, 3)
        assert ctype == "image/png"
        np.testing.assert_array_equal(strip, expected)


def test_vector_data_gets_path_svgs_and_answers_are_saved(tmp_path, running):
    vector_dataset(tmp_path / "v.h5")
    srv = running(tmp_path / "v.h5", k=3, num_queries=2, segment_length=5)
    q = json.loads(_get(srv.url + "api/query/0")[2])
    for item in q["items"]:
        assert item["kind"] == "path" and item["svg"].startswith("<svg")
        assert len(item["cursor"]) == 2 and len(item["cursor"][0]) == 5  # two views, 5 steps
    status, p = _post(srv, {"query": 0, "choice": "ranking", "ranks": [3, 1, 2]})
    assert status == 200 and p == {"answered": 1, "total": 2, "next": 1, "done": False, "k": 3}
    np.testing.assert_array_equal(load_queries(tmp_path / "v.h5").labels[0], [0, 2, 1])
    status, err = _post(srv, {"query": 1, "choice": "ranking", "ranks": [1, 9, 2]})
    assert status == 400 and "field 'ranks'" in err["error"]
    status, err = _post(srv, ["not", "a", "dict"])
    assert status == 400 and "expected a JSON object" in err["error"]
    for path in ("api/query/7", "media/0/0.png", "nope"):
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(srv.url + path)
        assert e.value.code == 404


def test_image_key_is_checked(tmp_path):
    vector_dataset(tmp_path / "v.h5")
    with pytest.raises(
        DataValidationError, match=r"image_key: expected one of the observation keys"
    ):
        make_server(tmp_path / "v.h5", image_key="rgb", segment_length=5)


def test_cli_reports_bad_files(tmp_path, capsys):
    from robopref.humans import main

    assert main([str(tmp_path / "missing.h5"), "--port", "0"]) == 2
    assert "missing.h5: file not found" in capsys.readouterr().err
