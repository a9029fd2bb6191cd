"""Only its user can write to the label server (issue 13): Host / Origin / token checks,
validation of every field with JSON errors (no server traceback), locks, loopback binds and
one-line CLI errors that leave the dataset untouched."""

from __future__ import annotations

import copy
import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from robopref.data import load_queries
from robopref.humans import make_server

sys.path.insert(0, str(Path(__file__).parent))
from humans_factory import lock_held_by_another_process, vector_dataset  # noqa: E402

GOOD = {"query": 0, "choice": "ranking", "ranks": [1, 2], "seconds": 2.5}


@pytest.fixture
def running(tmp_path):
    """A server on a free loopback port over a fresh vector dataset (stopped after the test)."""
    servers = []

    def start(path=None, **kwargs):
        path = path or tmp_path / "v.h5"
        if not path.exists():
            vector_dataset(path)
        kwargs = {"num_queries": 3, "segment_length": 5, **kwargs}
        srv = make_server(path, port=0, **kwargs)
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        return srv, path

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def request(srv, method, path, body=b"", headers=None, host=None):
    """Send one request with exactly these headers (``Host`` too, unless ``host`` is None:
    then http.client's own ``127.0.0.1:PORT``); returns (status, parsed JSON or bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None and host != "":
            conn.putheader("Host", host)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders(body or None)
        r = conn.getresponse()
        data = r.read()
        if r.getheader("Content-Type", "").startswith("application/json"):
            return r.status, json.loads(data)
        return r.status, data
    finally:
        conn.close()


def post(srv, obj, token=True, **headers):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    h = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if token:
        h["X-Robopref-Token"] = srv.token
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return request(srv, "POST", "/api/answer", body, h)


# ------------------------------------------------------------------- cross-site writes


def test_a_cross_site_text_plain_post_is_refused(running, capsys):
    srv, path = running()
    # What a form or no-preflight fetch on http://evil.example can send.
    for token in (False, True):
        status, err = post(
            srv, GOOD, token=token, Origin="http://evil.example", Content_Type="text/plain"
        )
        assert status == 403 and "Origin" in err["error"]
    status, err = post(srv, GOOD, Origin="null")
    assert status == 403
    status, err = post(srv, GOOD, Sec_Fetch_Site="cross-site")
    assert status == 403 and "Sec-Fetch-Site" in err["error"]
    assert load_queries(path) is None  # nothing was written
    assert "Traceback" not in capsys.readouterr().err


def test_every_write_needs_the_pages_token(running):
    srv, path = running()
    status, page = request(srv, "GET", "/")
    assert status == 200 and f'content="{srv.token}"'.encode() in page
    assert len(srv.token) >= 40  # 32 random bytes
    other, _ = running(path)
    assert other.token != srv.token  # one secret per server
    for token in (None, "", srv.token[:-1] + ("A" if srv.token[-1] != "A" else "B"), "é"):
        headers = {} if token is None else {"X-Robopref-Token": token}
        body = json.dumps(GOOD).encode()
        headers.update({"Content-Type": "application/json", "Content-Length": str(len(body))})
        status, err = request(srv, "POST", "/api/answer", body, headers)
        assert status == 403 and "X-Robopref-Token" in err["error"], token
    status, err = post(srv, GOOD, Content_Type="text/plain")  # right token, wrong type
    assert status == 415 and "application/json" in err["error"]
    assert load_queries(path) is None
    status, p = post(srv, GOOD, Origin=f"http://127.0.0.1:{srv.port}", Sec_Fetch_Site="same-origin")
    assert status == 200 and p["answered"] == 1
    np.testing.assert_array_equal(load_queries(path).labels, [[1, 0]])


def test_other_host_names_are_refused_dns_rebinding(running):
    srv, path = running()
    port = srv.port
    for host in (f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1", "[::1", ""):
        status, err = request(srv, "GET", "/api/progress", host=host)
        assert status == 403 and "Host" in err["error"], host
    status, err = request(
        srv, "POST", "/api/answer", json.dumps(GOOD).encode(),
        {"Content-Type": "application/json", "X-Robopref-Token": srv.token,
         "Content-Length": str(len(json.dumps(GOOD)))},
        host=f"rebind.evil.example:{port}",
    )  # fmt: skip
    assert status == 403
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert request(srv, "GET", "/api/progress", host=host)[0] == 200
    assert load_queries(path) is None


# ------------------------------------------------------------------- malformed requests


def test_bad_lengths_and_numbers_get_a_json_400_never_a_traceback(running, capsys):
    srv, path = running()
    body = json.dumps(GOOD).encode()
    base = {"Content-Type": "application/json", "X-Robopref-Token": srv.token}
    for length in ("abc", "-5", "0", "1e3", str(10**400), "70000"):
        status, err = request(srv, "POST", "/api/answer", body, {**base, "Content-Length": length})
        assert status == 400 and "Content-Length" in err["error"], length
    status, err = request(srv, "POST", "/api/answer", body, base)  # no Content-Length
    assert status == 400 and "Content-Length" in err["error"]
    raw = [
        b'{"query": 0, "choice": "equal", "seconds": ' + b"9" * 400 + b"}",
        b'{"query": 0, "choice": "equal", "seconds": NaN}',
        b'{"query": 0, "choice": "equal", "seconds": Infinity}',
        b'{"query": 0, "choice": "equal", "seconds": -1}',
        b'{"query": 0, "choice": "equal", "seconds": "12"}',
        b'{"query": 0, "choice": "equal", "seconds": 1e999}',
    ]
    for b in raw:
        status, err = post(srv, b)
        assert status == 400 and "seconds" in err["error"], b[:60]
    for obj, field in [
        ({"query": 3, "choice": "equal"}, "query"),
        ({"query": -1, "choice": "equal"}, "query"),
        ({"query": "0", "choice": "equal"}, "query"),
        ({"query": True, "choice": "equal"}, "query"),
        ({"query": 0.5, "choice": "equal"}, "query"),
        ({"query": int("9" * 400), "choice": "equal"}, "query"),
        ({"choice": "equal"}, "query"),
        ({"query": 0}, "choice"),
        ({"query": 0, "choice": "best"}, "choice"),
        ({"query": 0, "choice": None}, "choice"),
        ({"query": 0, "choice": "ranking", "ranks": [1, 1.5]}, "ranks"),
        ({"query": 0, "choice": "ranking", "ranks": "12"}, "ranks"),
        ({"query": 0, "choice": "equal", "ranks": [1, 2]}, "ranks"),
        ({"query": 0, "choice": "equal", "label": 1}, "unknown"),
    ]:
        status, err = post(srv, obj)
        assert status == 400 and field in err["error"], obj
    for b in (b"\xff\xfe{", b"[" * 20000 + b"]" * 20000, b"[1, 2]", b'"x"'):
        status, err = post(srv, b[:60000])
        assert status == 400 and "JSON" in err["error"], b[:20]
    assert load_queries(path) is None
    assert "Traceback" not in capsys.readouterr().err
    status, p = post(srv, {"query": 2, "choice": "cant_tell", "ranks": None, "seconds": 0})
    assert status == 200 and p["answered"] == 1  # the server still works


def test_busy_or_rewritten_dataset_gives_409(running):
    srv, path = running()
    with lock_held_by_another_process(path):
        status, err = post(srv, GOOD)
    assert status == 409 and "another robopref process" in err["error"]
    assert load_queries(path) is None
    assert post(srv, GOOD)[0] == 200
    before = load_queries(path)
    from robopref.data import save_queries

    # someone else rewrites the file between two answers, with another answer to query 0
    other = copy.deepcopy(before)
    other.metadata["human_labels"]["answers"][0]["time"] = "2000-01-01T00:00:00+00:00"
    save_queries(path, other)
    status, err = post(srv, {"query": 1, "choice": "equal"})
    assert status == 409 and "NOT saved" in err["error"]
    assert load_queries(path).metadata == other.metadata


def test_serving_without_answers_writes_nothing(running):
    srv, path = running()
    before = path.read_bytes()
    for route in ("/", "/api/progress", "/api/query/0", "/api/query/2"):
        assert request(srv, "GET", route)[0] == 200
    assert path.read_bytes() == before


# ------------------------------------------------------------------- binds and the CLI


def test_non_loopback_bind_needs_allow_remote(tmp_path, running):
    vector_dataset(tmp_path / "v.h5")
    with pytest.raises(ValueError, match="allow-remote"):
        make_server(tmp_path / "v.h5", host="0.0.0.0", port=0, segment_length=5)
    srv, _ = running(tmp_path / "v.h5", host="0.0.0.0", allow_remote=True)
    assert srv.remote
    port = srv.port
    assert request(srv, "GET", "/api/progress", host=f"evil.example:{port}")[0] == 403
    assert request(srv, "GET", "/api/progress", host=f"127.0.0.1:{port}")[0] == 200
    assert request(srv, "GET", "/api/progress", host=f"192.168.7.7:{port}")[0] == 200
    assert post(srv, GOOD, Origin="http://evil.example")[0] == 403


def _cli(*args, timeout=60, via="robopref.humans"):
    """``python -m robopref.humans ARGS`` (``via="robopref.cli"``: ``robopref label-ui ARGS``)."""
    command = [sys.executable, "-m", via, *(["label-ui"] if via == "robopref.cli" else []), *args]
    return subprocess.run(
        command,
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )  # fmt: skip


def _one_line_error(r, *words):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def _untouched(tmp_path, path, before):
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".v.h5.lock")) == [
        "v.h5"
    ]


def test_cli_errors_are_one_line_exit_2_and_write_nothing(tmp_path):
    path = tmp_path / "v.h5"
    vector_dataset(path)
    before = path.read_bytes()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = _cli(str(path), "--port", str(port), "--segment-length", "5", via="robopref.cli")
    _one_line_error(r, "cannot listen on 127.0.0.1:", "in use")
    _one_line_error(_cli(str(path), "--host", "0.0.0.0", "--port", "0"), "--allow-remote")
    _one_line_error(_cli(str(path), "--port", "70000"), "--port", "70000")
    _one_line_error(_cli(str(path), "--port", "abc"), "--port", "'abc'")
    _one_line_error(
        _cli(str(path), "--host", "no-such-host.invalid", "--allow-remote", "--port", "0",
             "--segment-length", "5"),
        "cannot listen on no-such-host.invalid",
    )  # fmt: skip
    _one_line_error(_cli(str(path), "--num-queries", "0", "--port", "0"), "num_queries")
    _untouched(tmp_path, path, before)


def test_cli_allow_remote_prints_a_loud_warning(tmp_path):
    path = tmp_path / "v.h5"
    vector_dataset(path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "robopref.humans", str(path), "--host", "0.0.0.0",
         "--allow-remote", "--port", "0", "--segment-length", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    try:
        assert "Open http://" in proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait(10)
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert "WARNING" in err and "0.0.0.0" in err and "write labels" in err


def test_huge_query_numbers_are_404(running, capsys):
    srv, _ = running()
    for route in (
        "/api/query/" + "9" * 5000,
        "/api/query/" + "1" * 20,
        "/media/0/" + "7" * 5000 + ".png",
    ):
        status, err = request(srv, "GET", route)
        assert status == 404 and "no such" in err["error"], route
    assert "Traceback" not in capsys.readouterr().err


def test_fifty_connections_at_once_are_all_answered(tmp_path):
    path = tmp_path / "v.h5"
    vector_dataset(path)
    srv = make_server(path, port=0, num_queries=3, segment_length=5)
    socks, serving = [], False
    try:
        # All 50 connect before the server accepts any: the kernel's queue must hold them
        # (a backlog of 5 drops or resets some).
        socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=2) for _ in range(50)]
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        serving = True
        line = f"GET /api/progress HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode()
        for s in socks:
            s.sendall(line)
            s.setblocking(False)
        answered, waiting, deadline = 0, set(socks), time.monotonic() + 10
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(list(waiting), [], [], 0.2)
            for s in ready:
                waiting.discard(s)
                try:
                    answered += s.recv(64).startswith(b"HTTP/1.0 200")
                except OSError:  # reset
                    pass
        assert answered == 50
    finally:
        for s in socks:
            s.close()
        if serving:  # shutdown() waits for serve_forever
            srv.shutdown()
        srv.server_close()
