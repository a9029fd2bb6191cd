"""Label in a real headless browser (Debian chromium + chromedriver through selenium): click
through queries, kill the server, restart it, and check the labels stored in the HDF5 file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robopref.data import load_dataset, load_queries

sys.path.insert(0, str(Path(__file__).parent))
from humans_factory import image_dataset, vector_dataset  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="browser test needs selenium")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium / chromedriver not installed (apt-get install chromium chromium-driver)",
)
ARGS = (
    "--headless --no-sandbox --disable-gpu --disable-background-networking "
    "--disable-component-update --disable-sync --no-first-run --window-size=1200,900"
)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ARGS.split():
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


class Server:
    """``python -m robopref.humans`` in a subprocess on a free port."""

    def __init__(self, *args: str):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "robopref.humans", *args, "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        line = self.proc.stdout.readline()
        m = re.search(r"(http://\S+/)", line)
        assert m, (
            f"server did not start: {line}{self.proc.stdout.read() if self.proc.poll() is not None else ''}"
        )
        self.url = m.group(1)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdout.close()


def _wait_text(driver, element_id, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.find_element("id", element_id).text == text:
            return
        time.sleep(0.05)
    raise AssertionError(
        f"#{element_id} is {driver.find_element('id', element_id).text!r}, not {text!r}"
    )


def _click(driver, button_id, progress, query=None):
    driver.find_element("id", button_id).click()
    _wait_text(driver, "progress", progress)
    if query is not None:  # the next query is on screen (its buttons are new)
        _wait_text(driver, "query-index", query)


def test_click_through_kill_restart_and_resume(tmp_path, browser):
    path = tmp_path / "demos.h5"
    ds = image_dataset(path, n=5, T=12, hw=(16, 12))
    cli = [str(path), "--num-queries", "5", "--segment-length", "6", "--seed", "3"]
    server = Server(*cli)
    try:
        browser.get(server.url)
        _wait_text(browser, "progress", "0 / 5")
        _wait_text(browser, "query-index", "1 of 5")
        # the canvas shows the query's frames: pause, then compare one pixel with the data
        browser.find_element("id", "btn-play").click()
        deadline = time.monotonic() + 10
        while not browser.execute_script("return !!data.items[0].img"):
            assert time.monotonic() < deadline, "the film strip did not load"
            time.sleep(0.05)
        assert load_queries(path) is None  # serving writes nothing before the first answer
        ti, st = browser.execute_script("return [data.items[0].trajectory, data.items[0].start]")
        f, pixel = browser.execute_script(
            "const c = document.querySelector('#item-0 canvas');"
            "return [Math.min(frame, data.items[0].frames - 1),"
            " Array.from(c.getContext('2d').getImageData(0, 0, 1, 1).data)];"
        )
        assert pixel[:3] == ds[ti].observations["image"][st + f, 0, 0].tolist()
        browser.find_element("id", "btn-play").click()

        _click(browser, "btn-left", "1 / 5", "2 of 5")
        _click(browser, "btn-equal", "2 / 5", "3 of 5")
        _click(browser, "btn-cant-tell", "3 / 5", "4 of 5")
    finally:
        server.kill()  # no clean shutdown: answers must already be on disk
    q = load_queries(path)  # only answers with a preference: no "can't tell" or unanswered ties
    np.testing.assert_array_equal(q.labels, [[1, 0], [0.5, 0.5]])
    np.testing.assert_array_equal(q.confidence, [1, 1])
    assert q.traj_index[0, 0] == ti and q.start[0, 0] == st
    state = q.metadata["human_labels"]
    assert state["answered"] == [True, True, True, False, False]
    assert [a["choice"] for a in state["answers"][:3]] == ["ranking", "equal", "cant_tell"]
    assert all(a["seconds"] > 0 for a in state["answers"][:3])

    server = Server(*cli)  # restart: continues at the first unanswered query
    try:
        browser.get(server.url)
        _wait_text(browser, "progress", "3 / 5")
        _wait_text(browser, "query-index", "4 of 5")
        _click(browser, "btn-right", "4 / 5", "5 of 5")
        browser.find_element("tag name", "body").send_keys("1")  # keyboard: left is better
        _wait_text(browser, "progress", "5 / 5")
        assert browser.find_element("id", "done").is_displayed()
    finally:
        server.kill()
    q = load_queries(path)
    np.testing.assert_array_equal(q.labels, [[1, 0], [0.5, 0.5], [0, 1], [1, 0]])
    np.testing.assert_array_equal(q.confidence, [1, 1, 1, 1])
    assert q.metadata["human_labels"]["rows"] == [0, 1, 3, 4]
    assert q.teacher == "human" and q.label_kind == "graded"
    back = load_dataset(path)  # the trajectories are untouched by the answers
    np.testing.assert_array_equal(back[2].observations["image"], ds[2].observations["image"])


def test_rank_three_vector_only_rollouts(tmp_path, browser):
    from selenium.webdriver.support.ui import Select

    path = tmp_path / "reach.h5"
    vector_dataset(path)
    server = Server(str(path), "--k", "3", "--num-queries", "2", "--segment-length", "5")
    try:
        browser.get(server.url)
        _wait_text(browser, "progress", "0 / 2")
        _wait_text(browser, "query-index", "1 of 2")  # set in the same JS task as the items
        assert len(browser.find_elements("css selector", "#items svg .cursor")) == 6
        for k, rank in enumerate([2, 1, 2]):
            Select(browser.find_element("id", f"rank-{k}")).select_by_value(str(rank))
        # a double click answers once: the second one must not land on the next query
        browser.execute_script(
            "const b = document.getElementById('btn-submit'); b.click(); b.click();"
        )
        _wait_text(browser, "query-index", "2 of 2")
        time.sleep(0.3)
        assert browser.find_element("id", "progress").text == "1 / 2"
        assert load_queries(path).metadata["human_labels"]["answered"] == [True, False]
        _click(browser, "btn-equal", "2 / 2")
    finally:
        server.kill()
    q = load_queries(path)
    np.testing.assert_array_equal(q.labels, [[0.5, 2.0, 0.5], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(q.confidence, [1, 1])


def test_another_web_page_cannot_write_labels(tmp_path, browser):
    """A page on another origin POSTs an answer the way any site can (``no-cors`` fetch,
    ``text/plain``, and a form): the requests reach the server and are refused (403)."""
    import http.server
    import threading

    path = tmp_path / "reach.h5"
    vector_dataset(path)
    server = Server(str(path), "--num-queries", "2", "--segment-length", "5", "--verbose")
    target = server.url + "api/answer"
    evil = f"""<!doctype html><html><body>
<form id="f" method="POST" action="{target}" enctype="text/plain">
<input name='{{"query": 0, "choice": "ranking", "ranks": [1, 2], "x": "' value='"}}'></form>
<script>
fetch("{target}", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{query: 0, choice: "ranking", ranks: [1, 2]}})}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>""".encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(evil)))
            self.end_headers()
            self.wfile.write(evil)

        def log_message(self, *args):
            pass

    site = http.server.HTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=site.serve_forever, args=(0.05,), daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{site.server_address[1]}/")
        deadline = time.monotonic() + 10
        refused = []
        while len(refused) < 2 and time.monotonic() < deadline:
            line = server.proc.stdout.readline()
            if '"POST /api/answer' in line:
                refused.append(line)
        assert len(refused) == 2, refused  # both requests arrived...
        assert all('" 403 ' in r for r in refused), refused  # ...and were refused
    finally:
        site.shutdown()
        site.server_close()
        server.kill()
    assert load_queries(path) is None
