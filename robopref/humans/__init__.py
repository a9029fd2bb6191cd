"""Human preference labelling in the browser (standard library HTTP server; no torch).

    from robopref.humans import serve
    serve("data/demos.h5", k=2, num_queries=50)      # prints the URL to open

or ``python -m robopref.humans data/demos.h5 --port 8765``. Answers are written to the
dataset's ``preferences`` group after every click, under the dataset's writer lock; only
answered queries with a preference are stored there (see :mod:`robopref.humans.session`).
The server binds loopback only and saves answers only from its own page (Host, Origin and a
per-session token are checked; see :mod:`robopref.humans.server`).
"""

from robopref.humans.server import LabelServer, ListenError, main, make_server, serve
from robopref.humans.session import (
    FileChangedError,
    LabelSession,
    answered_queries,
    grades_from_ranks,
)

__all__ = [
    "FileChangedError",
    "LabelServer",
    "LabelSession",
    "ListenError",
    "answered_queries",
    "grades_from_ranks",
    "main",
    "make_server",
    "serve",
]
