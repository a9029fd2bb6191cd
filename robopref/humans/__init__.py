"""Human preference labelling in the browser (standard library HTTP server; no torch).

    from robopref.humans import serve
    serve("data/demos.h5", k=2, num_queries=50)      # prints the URL to open

or ``python -m robopref.humans data/demos.h5 --port 8765``. Answers are written to the
dataset's ``preferences`` group after every click (see :mod:`robopref.humans.session`).
"""

from robopref.humans.server import LabelServer, main, make_server, serve
from robopref.humans.session import LabelSession, answered_queries, grades_from_ranks

__all__ = [
    "LabelServer",
    "LabelSession",
    "answered_queries",
    "grades_from_ranks",
    "main",
    "make_server",
    "serve",
]
