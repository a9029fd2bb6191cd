"""robopref: learning from preferences in robotics."""

__version__ = "0.1.0"
