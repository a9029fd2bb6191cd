"""A local web page for labelling preferences by hand (standard library ``http.server``).

    python -m robopref.humans data/demos.h5 --k 2 --num-queries 50
    # or, from Python:
    from robopref.humans.server import serve
    serve("data/demos.h5", port=8765)

The page shows the K items of one query side by side, played in sync: the frames of the
first uint8 image observation ``[T, H, W, 3]`` (a film strip PNG drawn on a canvas), or, for
vector-only data, an SVG of the end-effector path (the first three state columns) in a top and
a side view with a dot moving along it. The person picks the better item (K = 2), ranks the
items (K > 2, equal ranks are ties), or answers "equal" or "can't tell"; every answer is
written to the dataset file at once and atomically (see :mod:`robopref.humans.session` for
the storage). Reopening the file continues at the first unanswered query.

Routes: ``GET /`` the page, ``GET /api/progress``, ``GET /api/query/<q>``,
``GET /media/<q>/<k>.png``, ``POST /api/answer`` (JSON ``{"query", "choice", "ranks",
"seconds"}``).

Only its user can write (a web page the labeller visits must not be able to):

* every request must carry a ``Host`` header naming the server as bound (loopback names and
  the port; for a non-loopback bind also IP literals and this machine's names), which stops
  DNS rebinding;
* an answer must come with the per-session random token of the page (header
  ``X-Robopref-Token``, compared in constant time), ``Content-Type: application/json`` and,
  when the browser sends them, an ``Origin`` of this server and a same-origin
  ``Sec-Fetch-Site``; a cross-site form or ``fetch`` can do none of that;
* the server binds to loopback unless ``allow_remote`` (``--allow-remote``) is given;
* every field of an answer is validated (400 with a JSON error, never a server traceback);
  a dataset another robopref process is writing, or one rewritten since the session read
  it, gives 409 and nothing is saved.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import os
import re
import secrets
import socket
import sys
from collections import OrderedDict
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from robopref.data import DataValidationError
from robopref.data.locks import FileBusyError
from robopref.humans.active import SELECTIONS, ActiveQueue, SelectorFactory
from robopref.humans.media import encode_png, film_strip, find_image_key, path_points, path_svg
from robopref.humans.session import FileChangedError, LabelSession

# At most 9 digits: a longer number is no query (and int() of > 4300 digits raises).
_MEDIA = re.compile(r"^/media/(\d{1,9})/(\d{1,9})\.png$")
_QUERY = re.compile(r"^/api/query/(\d{1,9})$")
_LENGTH = re.compile(r"^[0-9]{1,9}$")
MAX_BODY = 65536
TOKEN_HEADER = "X-Robopref-Token"
ANSWER_FIELDS = ("query", "choice", "ranks", "seconds")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback bind unless ``allow_remote``: anyone who can reach the port could
    then read the data and, with the page's token, write labels."""
    if not is_loopback(host) and not allow_remote:
        raise ValueError(
            f"--host: expected a loopback address (127.0.0.1, ::1 or localhost), found {host!r}; "
            "pass --allow-remote (allow_remote=True) to serve other machines on purpose"
        )


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``"name:port"`` / ``"[v6]:port"`` / ``"name"`` -> (lower-case name, port or None)."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, _, port = value.partition(":")
        rest = ":" + port if _ else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and rest[1:].isascii()):
        return None
    if not name:
        return None
    return name.lower(), (int(rest[1:]) if rest else None)


class ListenError(OSError):
    """The server cannot bind its address (port in use or out of range, unknown host)."""

    def __str__(self) -> str:
        return str(self.strerror)


class LabelServer(ThreadingHTTPServer):
    """An HTTP server bound to one :class:`LabelSession`; ``url`` is the page's address,
    ``token`` the per-session secret the page sends with every answer."""

    daemon_threads = True
    # The default backlog of 5 resets connections when a page (or many) opens several at once.
    request_queue_size = 128

    def __init__(
        self,
        session: LabelSession,
        host: str = "127.0.0.1",
        port: int = 0,
        image_key: str | None = None,
        fps: float | None = None,
        verbose: bool = False,
        allow_remote: bool = False,
    ) -> None:
        check_host(host, allow_remote)
        self.session = session
        first = session.dataset[0] if len(session.dataset) else None
        self.image_key = image_key if image_key is not None else (first and find_image_key(first))
        if image_key is not None and first is not None:
            obs = first.observations
            if not isinstance(obs, dict) or image_key not in obs:
                keys = sorted(obs) if isinstance(obs, dict) else ["(array observations)"]
                raise DataValidationError(
                    f"{session.path}: image_key: expected one of the observation keys {keys}, "
                    f"found {image_key!r}"
                )
        meta_fps = session.dataset.metadata.get("fps")
        self.fps = float(fps or (meta_fps if isinstance(meta_fps, (int, float)) else 10.0))
        self.verbose = verbose
        self.token = secrets.token_urlsafe(32)
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host.strip("[]"), port), _Handler)
        except OSError as e:
            raise ListenError(
                e.errno, f"cannot listen on {host}:{port}: {e.strerror or e}"
            ) from None
        self.remote = not is_loopback(host)
        self.port = int(self.server_address[1])
        names = {"localhost", "127.0.0.1", "[::1]"}
        if self.remote:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self.host_names = names

    @property
    def url(self) -> str:
        host = self.server_address[0]
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def host_allowed(self, value: str | None) -> bool:
        """Whether a ``Host`` header (or an origin's host part) names this server: the right
        port and a loopback name; for a non-loopback bind also any IP literal or this
        machine's host name. Names from elsewhere (DNS rebinding) are refused."""
        parts = _split_host(value) if value else None
        if parts is None:
            return False
        name, port = parts
        if (port if port is not None else 80) != self.port:
            return False
        if name in self.host_names:
            return True
        if not self.remote:
            return False
        try:
            ipaddress.ip_address(name.strip("[]"))
            return True
        except ValueError:
            return False

    def origin_allowed(self, origin: str) -> bool:
        return origin.startswith("http://") and self.host_allowed(origin[len("http://") :])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line on stderr instead of ``socketserver``'s traceback."""
        e = sys.exc_info()[1]
        if isinstance(e, (ConnectionError, TimeoutError)):
            return
        print(
            f"robopref label-ui: error while answering {client_address[0]}: "
            f"{type(e).__name__}: {e}",
            file=sys.stderr,
            flush=True,
        )

    # ---------------------------------------------------------------- content

    def query_json(self, q: int) -> dict[str, Any]:
        s = self.session
        queries = s.queries
        if not 0 <= q < queries.num_queries:
            raise KeyError(q)
        items = []
        path_items = []
        for k in range(queries.k):
            if not queries.mask[q, k]:
                items.append({"mask": False})
                continue
            ti, st, ln = (int(a[q, k]) for a in (queries.traj_index, queries.start, queries.length))
            t = s.dataset[ti]
            item: dict[str, Any] = {
                "mask": True,
                "trajectory": ti,
                "start": st,
                "length": ln,
                "task": t.task,
                "instruction": t.instruction,
                "frames": ln,
            }
            if self.image_key:
                frames = t.observations[self.image_key]
                h, w = frames.shape[1:3]
                stride = max(1, -(-max(h, w) // 256))
                item.update(
                    kind="frames",
                    url=f"/media/{q}/{k}.png",
                    frame_height=len(range(0, h, stride)),
                    frame_width=len(range(0, w, stride)),
                )
            else:
                item["kind"] = "path"
                path_items.append((item, path_points(t.state), st, ln))
            items.append(item)
        if path_items:
            whole = np.concatenate([p for _, p, _, _ in path_items])
            bounds = (whole.min(0), whole.max(0))
            for item, p, st, ln in path_items:
                svg, cursor = path_svg(p[st : st + ln], bounds, context=p)
                item.update(svg=svg, cursor=cursor)
        state = s.state
        return {
            "query": q,
            "k": queries.k,
            "fps": self.fps,
            "answered": bool(state["answered"][q]),
            "answer": state["answers"][q],
            "items": items,
            "progress": s.progress(),
        }

    def media_png(self, q: int, k: int) -> bytes:
        key = (q, k)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        queries = self.session.queries
        if not (self.image_key and 0 <= q < queries.num_queries and 0 <= k < queries.k):
            raise KeyError(key)
        if not queries.mask[q, k]:
            raise KeyError(key)
        t = self.session.dataset[int(queries.traj_index[q, k])]
        st, ln = int(queries.start[q, k]), int(queries.length[q, k])
        frames = t.observations[self.image_key][st : st + ln]
        strip, _, _ = film_strip(frames)
        data = encode_png(strip)
        self._cache[key] = data
        if len(self._cache) > 64:
            self._cache.popitem(last=False)
        return data


class _Refused(Exception):
    """A request refused with ``status`` and a one-line JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server: LabelServer
    server_version = "robopref-label-ui/1"
    # A client that announces more body than it sends cannot hold a thread forever.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")  # no clickjacking of the answer buttons
        self.send_header("Content-Security-Policy", "frame-ancestors 'none'")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests (bad request line, unsupported method) get a JSON error too."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._json({"error": message or phrase}, code)

    def _check_host(self) -> None:
        host = self.headers.get("Host")
        if not self.server.host_allowed(host):
            raise _Refused(
                HTTPStatus.FORBIDDEN,
                f"Host: expected this server ({self.server.url}), found {host!r} (requests "
                "under another name are refused: DNS rebinding)",
            )

    def _handle(self, fn: Any) -> None:
        try:
            self._check_host()
            fn()
        except _Refused as e:
            self.close_connection = True
            self._json({"error": str(e)}, e.status)
        except (FileBusyError, FileChangedError) as e:
            self._json({"error": str(e)}, HTTPStatus.CONFLICT)
        except DataValidationError as e:
            self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        except KeyError:
            self._json({"error": f"no such query or item: {self.path}"}, HTTPStatus.NOT_FOUND)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # never a traceback to the client or the terminal
            self.server.handle_error(self.request, self.client_address)
            self.close_connection = True
            self._json(
                {"error": f"internal error: {type(e).__name__}: {e}"},
                HTTPStatus.INTERNAL_SERVER_ERROR,
            )

    def do_GET(self) -> None:  # noqa: N802
        self._handle(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._handle(self._post)

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            page = PAGE.replace("__ROBOPREF_TOKEN__", self.server.token)
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif path == "/api/progress":
            self._json(self.server.session.progress())
        elif m := _QUERY.match(path):
            self._json(self.server.query_json(int(m.group(1))))
        elif m := _MEDIA.match(path):
            self._send(200, self.server.media_png(int(m.group(1)), int(m.group(2))), "image/png")
        else:
            self._json({"error": f"no such page: {path}"}, HTTPStatus.NOT_FOUND)

    def _post(self) -> None:
        if self.path != "/api/answer":
            raise _Refused(HTTPStatus.NOT_FOUND, f"no such page: {self.path}")
        h = self.headers
        origin = h.get("Origin")
        if origin is not None and not self.server.origin_allowed(origin):
            raise _Refused(
                HTTPStatus.FORBIDDEN,
                f"Origin: expected this server's page ({self.server.url.rstrip('/')}), found "
                f"{origin!r}: answers from other web pages are refused",
            )
        site = h.get("Sec-Fetch-Site")
        if site not in (None, "same-origin", "none"):
            raise _Refused(
                HTTPStatus.FORBIDDEN,
                f"Sec-Fetch-Site: expected 'same-origin', found {site!r}: answers from other "
                "web pages are refused",
            )
        token = h.get(TOKEN_HEADER, "").encode("latin-1", "replace")
        if not hmac.compare_digest(token, self.server.token.encode()):
            raise _Refused(
                HTTPStatus.FORBIDDEN,
                f"{TOKEN_HEADER}: missing or wrong (expected the token of the page this server "
                "sent; reload the page)",
            )
        ctype = h.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise _Refused(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type: expected application/json, found {ctype or None!r}",
            )
        if h.get("Transfer-Encoding") is not None:
            raise _Refused(
                HTTPStatus.LENGTH_REQUIRED,
                "Transfer-Encoding: expected none (send the body with a Content-Length)",
            )
        raw = h.get("Content-Length")
        if raw is None or not _LENGTH.match(raw.strip()) or not 0 < int(raw) <= MAX_BODY:
            shown = raw if raw is None or len(raw) <= 20 else raw[:17] + "..."
            raise _Refused(
                HTTPStatus.BAD_REQUEST,
                f"Content-Length: expected an integer in [1, {MAX_BODY}], found {shown!r}",
            )
        length = int(raw)
        body = self.rfile.read(length)
        if len(body) != length:
            raise _Refused(
                HTTPStatus.BAD_REQUEST,
                f"body: expected {length} bytes (Content-Length), found {len(body)}",
            )
        answer = parse_answer(body)
        self._json(self.server.session.answer(**answer))


def parse_answer(body: bytes) -> dict[str, Any]:
    """The JSON object of a posted answer as keyword arguments of ``LabelSession.answer``
    (``q``, ``choice``, ``ranks``, ``seconds``); the values are validated there.

    Raises:
        DataValidationError: not UTF-8 JSON, not an object, an unknown field or a missing
            ``query`` / ``choice``.
    """
    try:
        # NaN / Infinity parse as floats and are refused by the field checks, which name
        # the field.
        obj = json.loads(body)
    except (ValueError, RecursionError) as e:  # JSON and UTF-8 errors are ValueErrors
        raise DataValidationError(
            f"answer: expected a JSON object, found invalid JSON: {e}"
        ) from None
    if not isinstance(obj, dict):
        raise DataValidationError(f"answer: expected a JSON object, found {type(obj).__name__}")
    unknown = sorted(set(obj) - set(ANSWER_FIELDS))
    if unknown:
        raise DataValidationError(
            f"answer: expected only the fields {list(ANSWER_FIELDS)}, found unknown {unknown[:5]}"
        )
    missing = [f for f in ("query", "choice") if f not in obj]
    if missing:
        raise DataValidationError(f"answer: field {missing[0]!r}: expected it, found none")
    return {
        "q": obj["query"],
        "choice": obj["choice"],
        "ranks": obj.get("ranks"),
        "seconds": obj.get("seconds"),
    }


def make_server(
    dataset_path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 0,
    k: int = 2,
    num_queries: int = 20,
    segment_length: int = 25,
    seed: int = 0,
    image_key: str | None = None,
    fps: float | None = None,
    labeller: str = "human",
    overwrite: bool = False,
    verbose: bool = False,
    allow_remote: bool = False,
    active: ActiveQueue | None = None,
) -> LabelServer:
    """Open the labelling session of ``dataset_path`` (reading only) and bind the server (not
    started: call ``serve_forever()``; ``port=0`` picks a free port, see ``.url``).
    Arguments as in :func:`serve`. The file is first written by the first answer, so a server
    that fails to bind (busy port, bad host) leaves it untouched.

    Raises:
        ValueError: a non-loopback ``host`` without ``allow_remote``.
        DataValidationError: the file or a session argument is invalid.
        OSError: the address cannot be bound (port in use, unknown host).
    """
    check_host(host, allow_remote)
    session = LabelSession(
        dataset_path, k, num_queries, segment_length, seed, labeller, overwrite, active
    )
    return LabelServer(session, host, port, image_key, fps, verbose, allow_remote)


def serve(
    dataset_path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 0,
    k: int = 2,
    num_queries: int = 20,
    segment_length: int = 25,
    seed: int = 0,
    image_key: str | None = None,
    fps: float | None = None,
    labeller: str = "human",
    overwrite: bool = False,
    verbose: bool = False,
    allow_remote: bool = False,
    active: ActiveQueue | None = None,
) -> None:
    """Serve the labelling page for ``dataset_path`` until interrupted (Ctrl-C).

    Args:
        dataset_path: a robopref HDF5 dataset (``robopref.data.save_dataset``; import a
            robomimic or LeRobot dataset first with ``robopref.data.importers``).
        host, port: where to listen (``port=0``: a free port; the URL is printed). Loopback
            only unless ``allow_remote``.
        k, num_queries, segment_length, seed: the queries of a new session (ignored when the
            file holds an earlier session or unlabelled queries; see :class:`LabelSession`).
        image_key: observation key of the frames to show (default: the first uint8
            ``[T, H, W, C]`` key; none: the end-effector path plot).
        fps: playback speed (default: ``metadata["fps"]`` of the dataset, else 10).
        labeller: stored as the queries' ``teacher``.
        overwrite: replace labels from a simulated teacher with a new human session.
        verbose: log every request.
        allow_remote: allow a non-loopback ``host`` (e.g. ``0.0.0.0``); prints a warning.
        active: pick the queries as the answers come (:mod:`robopref.humans.active`).
    """
    server = make_server(
        dataset_path, host, port, k, num_queries, segment_length, seed, image_key, fps,
        labeller, overwrite, verbose, allow_remote, active,
    )  # fmt: skip
    # the warning first: whoever reads the URL line has been warned already
    if server.remote:
        bar = "!" * 78
        print(
            f"{bar}\nWARNING: label-ui is listening on {host}:{server.port}, NOT only on this "
            "machine.\nAnyone who can reach this port can see the data; anyone who can load "
            f"the page can\nwrite labels into {server.session.path}. Use it only on a network "
            f"you trust.\n{bar}",
            file=sys.stderr,
            flush=True,
        )
    p = server.session.progress()
    print(
        f"Labelling {server.session.path}: {p['answered']} / {p['total']} answered, K={p['k']}. "
        f"Open {server.url} (Ctrl-C to stop)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block), exit code 2."""

    def error(self, message: str) -> Any:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None, selector_factory: SelectorFactory | None = None) -> int:
    """Command line: ``robopref label-ui DATASET [--port N] [--k K] [--num-queries Q] ...``.

    ``selector_factory`` builds the reward ensemble of ``--select disagreement|entropy`` (the
    ``robopref`` command passes :class:`robopref.rewards.active.ActiveSelector`)."""
    parser = _Parser(
        prog="robopref label-ui",
        description="Label preferences between rollouts of a dataset in the browser.",
    )
    parser.add_argument("dataset", help="robopref HDF5 dataset file")
    parser.add_argument("--host", default="127.0.0.1", help="loopback unless --allow-remote")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--k", type=int, default=2, help="items per query (new session)")
    parser.add_argument("--num-queries", type=int, default=20, help="queries (new session)")
    parser.add_argument("--segment-length", type=int, default=25, help="steps per item")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-key", default=None, help="observation key of the frames")
    parser.add_argument("--fps", type=float, default=None, help="playback frames per second")
    parser.add_argument("--labeller", default="human", help="stored as the labels' teacher")
    parser.add_argument("--overwrite", action="store_true", help="replace teacher labels")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host such as 0.0.0.0 (other machines can then connect)",
    )
    parser.add_argument(
        "--select",
        choices=SELECTIONS,
        default=None,
        help="pick the next queries by a reward ensemble trained on the answers so far "
        "(disagreement of its members, entropy of its prediction) or uniformly (random), from "
        "a pool of 10 x --num-queries candidates (new session)",
    )
    parser.add_argument(
        "--retrain-every",
        type=int,
        default=10,
        help="answers between two retrainings of the ensemble (with --select; in the "
        "background, the page never waits)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"argument --port: expected 0..65535, found {args.port}")
    if args.fps is not None and not (np.isfinite(args.fps) and args.fps > 0):
        parser.error(f"argument --fps: expected a positive number, found {args.fps}")
    if not 0 <= args.seed < 2**32:
        parser.error(f"argument --seed: expected an integer in [0, 2**32), found {args.seed}")
    if args.retrain_every < 1:
        parser.error(
            f"argument --retrain-every: expected an integer >= 1, found {args.retrain_every}"
        )
    active = None
    if args.select is not None:
        if selector_factory is None:
            parser.error("argument --select: needs the reward models of `robopref label-ui`")
        active = ActiveQueue(
            args.select, args.num_queries, args.retrain_every, selector_factory, seed=args.seed
        )
    try:
        serve(
            args.dataset, args.host, args.port, args.k, args.num_queries, args.segment_length,
            args.seed, args.image_key, args.fps, args.labeller, args.overwrite, args.verbose,
            args.allow_remote, active,
        )  # fmt: skip
    except (DataValidationError, ValueError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # ListenError: "cannot listen on HOST:PORT: ..."
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>robopref: which is better?</title>
<meta name="robopref-token" content="__ROBOPREF_TOKEN__">
<style>
 body { font-family: system-ui, sans-serif; margin: 1.2em; color: #222; }
 header { display: flex; gap: 1.5em; align-items: baseline; }
 #items { display: flex; gap: 1.2em; flex-wrap: wrap; margin: 1em 0; }
 .item { border: 2px solid #ddd; border-radius: 8px; padding: .6em; }
 .item h3 { margin: 0 0 .4em 0; font-size: 1em; }
 .item .meta { font-size: .8em; color: #666; max-width: 30em; }
 canvas { image-rendering: pixelated; background: #000; display: block; }
 #buttons button, #player button { font-size: 1em; margin: .2em; padding: .45em .9em; }
 #error { color: #b00; } #done { font-size: 1.2em; color: #080; }
 .answered { color: #080; font-size: .9em; }
</style></head>
<body>
<header><h2>Which rollout is better?</h2>
 <span>Answered: <b id="progress">- / -</b></span>
 <span>Query <b id="query-index">-</b></span>
 <span id="answered-note" class="answered"></span></header>
<div id="done" hidden>All queries are answered; thank you. You can close this tab.</div>
<div id="player"><button id="btn-play">Pause</button>
 <span>frame <span id="frame">0</span></span>
 <button id="btn-back">&larr; Previous query</button>
 <button id="btn-next-unanswered">Next unanswered</button></div>
<div id="items"></div>
<div id="buttons"></div>
<div id="error"></div>
<p style="font-size:.8em;color:#666">Keys (K = 2): 1 or &larr; left better, 2 or &rarr; right better,
 e equal, c can't tell, space pause. Every answer is saved to the dataset file immediately.</p>
<script>
"use strict";
let cur = null, data = null, frame = 0, playing = true, timer = null, shownAt = 0, busy = false;
const $ = (id) => document.getElementById(id);
const LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
// The per-session secret of this page: the server saves an answer only with it.
const TOKEN = document.querySelector('meta[name="robopref-token"]').content;

async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  const j = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
function showProgress(p) {
  $("progress").textContent = p.answered + " / " + p.total;
  $("done").hidden = !p.done;
}
async function start() {
  const p = await getJSON("/api/progress");
  showProgress(p);
  await load(p.done ? p.total - 1 : p.next);
}
async function load(q) {
  $("error").textContent = "";
  data = await getJSON("/api/query/" + q);
  cur = q; frame = 0; shownAt = performance.now();
  showProgress(data.progress);
  $("query-index").textContent = (q + 1) + " of " + data.progress.total;
  $("answered-note").textContent = data.answered ? "(answered: " + describe(data.answer) + ")" : "";
  const box = $("items"); box.innerHTML = "";
  data.items.forEach((it, k) => {
    if (!it.mask) return;
    const div = document.createElement("div");
    div.className = "item"; div.id = "item-" + k;
    const name = data.k === 2 ? (k === 0 ? "Left" : "Right") : LETTERS[k];
    div.innerHTML = "<h3>" + name + "</h3>";
    if (it.kind === "frames") {
      const c = document.createElement("canvas");
      const scale = Math.max(1, Math.floor(256 / Math.max(it.frame_width, it.frame_height)));
      c.width = it.frame_width * scale; c.height = it.frame_height * scale;
      const img = new Image();
      img.onload = () => { it.img = img; draw(); };
      img.src = it.url;
      it.canvas = c; div.appendChild(c);
    } else {
      const holder = document.createElement("div");
      holder.innerHTML = it.svg; div.appendChild(holder);
      it.cursors = holder.querySelectorAll(".cursor");
    }
    const meta = document.createElement("div"); meta.className = "meta";
    meta.textContent = (it.instruction || it.task || "") + "  [trajectory " + it.trajectory +
      ", steps " + it.start + "-" + (it.start + it.length - 1) + "]";
    div.appendChild(meta);
    if (data.k > 2) {
      const sel = document.createElement("select"); sel.id = "rank-" + k;
      const n = data.items.filter((x) => x.mask).length;
      for (let r = 1; r <= n; r++) { const o = document.createElement("option"); o.value = r; o.textContent = "rank " + r; sel.appendChild(o); }
      sel.value = String(Math.min(k + 1, n));
      div.appendChild(sel);
    }
    box.appendChild(div);
  });
  buttons();
  restart();
}
function describe(a) {
  if (!a) return "";
  if (a.choice === "ranking") return "ranks " + a.ranks.filter((r) => r !== null).join(", ");
  return a.choice === "equal" ? "equal" : "can't tell";
}
function buttons() {
  const b = $("buttons"); b.innerHTML = "";
  const add = (id, text, fn) => { const x = document.createElement("button"); x.id = id; x.textContent = text; x.onclick = fn; b.appendChild(x); };
  if (data.k === 2) {
    add("btn-left", "\u25C0 Left is better", () => answer("ranking", [1, 2]));
    add("btn-equal", "Equally good", () => answer("equal"));
    add("btn-right", "Right is better \u25B6", () => answer("ranking", [2, 1]));
  } else {
    add("btn-submit", "Submit ranking", () => answer("ranking",
      data.items.map((it, k) => it.mask ? parseInt($("rank-" + k).value) : 1)));
    add("btn-equal", "All equally good", () => answer("equal"));
  }
  add("btn-cant-tell", "Can't tell", () => answer("cant_tell"));
}
async function answer(choice, ranks) {
  if (busy) return;  // one answer at a time: a second click never lands on the next query
  busy = true;
  document.querySelectorAll("#buttons button").forEach((b) => { b.disabled = true; });
  try {
    const p = await getJSON("/api/answer", { method: "POST",
      headers: { "Content-Type": "application/json", "X-Robopref-Token": TOKEN },
      body: JSON.stringify({ query: cur, choice: choice, ranks: ranks || null,
                             seconds: (performance.now() - shownAt) / 1000 }) });
    await load(p.done ? cur : p.next);
  } catch (e) {
    $("error").textContent = "Not saved: " + e.message;
    document.querySelectorAll("#buttons button").forEach((b) => { b.disabled = false; });
  } finally { busy = false; }
}
function maxFrames() { return Math.max(...data.items.filter((x) => x.mask).map((x) => x.frames)); }
function draw() {
  if (!data) return;
  $("frame").textContent = frame;
  data.items.forEach((it) => {
    if (!it.mask) return;
    const f = Math.min(frame, it.frames - 1);
    if (it.kind === "frames" && it.img) {
      const ctx = it.canvas.getContext("2d"); ctx.imageSmoothingEnabled = false;
      ctx.drawImage(it.img, 0, f * it.frame_height, it.frame_width, it.frame_height, 0, 0, it.canvas.width, it.canvas.height);
    } else if (it.kind === "path") {
      it.cursors.forEach((c) => { const p = it.cursor[+c.dataset.view][f]; c.setAttribute("cx", p[0]); c.setAttribute("cy", p[1]); });
    }
  });
}
function restart() {
  if (timer) clearInterval(timer);
  draw();
  timer = setInterval(() => { if (playing) { frame = (frame + 1) % (maxFrames() + 5); draw(); } }, 1000 / data.fps);
}
$("btn-play").onclick = () => { playing = !playing; $("btn-play").textContent = playing ? "Pause" : "Play"; };
$("btn-back").onclick = () => { if (cur > 0) load(cur - 1); };
$("btn-next-unanswered").onclick = async () => { const p = await getJSON("/api/progress"); if (!p.done) load(p.next); };
document.addEventListener("keydown", (ev) => {
  if (!data || ev.target.tagName === "SELECT") return;
  const k = ev.key;
  if (k === " ") { $("btn-play").click(); ev.preventDefault(); }
  else if (data.k === 2 && (k === "1" || k === "ArrowLeft")) answer("ranking", [1, 2]);
  else if (data.k === 2 && (k === "2" || k === "ArrowRight")) answer("ranking", [2, 1]);
  else if (k === "e") answer("equal");
  else if (k === "c") answer("cant_tell");
});
start().catch((e) => { $("error").textContent = e.message; });
</script></body></html>
"""


if __name__ == "__main__":
    raise SystemExit(main())
