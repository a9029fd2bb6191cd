"""Recipe ``rapl``: preference-aligned visual encoders and OT visual rewards (Tian et al. 2024).

``config.py`` holds the typed config, ``recipe.py`` the run (read it top to bottom), ``data.py``
the videos and their labels, ``results.py`` the rows and tables, ``rl.py`` the optional RL
stage.
"""

from robopref.methods.rapl.config import Config
from robopref.methods.rapl.recipe import run
from robopref.methods.rapl.rl import run_gt_rl

__all__ = ["Config", "run", "run_gt_rl"]
