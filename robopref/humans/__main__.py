"""``python -m robopref.humans DATASET [--port N] [--k K] [--num-queries Q] [--seed S]``."""

from robopref.humans.server import main

raise SystemExit(main())
