"""Policies trained from preferences or relabelled data.

``robopref.policies.iql`` (offline RL), ``robopref.policies.lm`` (language policies; imports
transformers, so it is not imported here) and ``robopref.policies.vla`` (tokenised-action VLAs).
"""

from robopref.policies.buffer import TransitionBuffer
from robopref.policies.iql import IQL, IQLConfig, expectile_loss

__all__ = ["IQL", "IQLConfig", "TransitionBuffer", "expectile_loss"]
