"""Vision-language-action (VLA) policies with tokenised actions, LoRA and TPO (GRAPE).

>>> from robopref.policies.vla import build_tiny_vla, sft_train, apply_lora, tpo_train
>>> policy = build_tiny_vla(["press the button"], obs_mode="state")
>>> actions = policy.act(states, ["press the button"] * len(states))   # [N, 4] in [-1, 1]

Actions: 256 uniform bins per dimension over [-1, 1], bins = the last 256 ids of the LM
vocabulary (:class:`ActionTokenizer`). Observations: ``obs_mode`` ``"state"`` (39-d vector),
``"image"`` or ``"image+state"`` (:class:`ObsEncoder`). A local Hugging Face image-text-to-text
model (SmolVLM / Idefics3, LLaVA) is a policy too (:class:`VLMPolicy`)::

    policy = VLAPolicy.from_pretrained("models/smolvlm", "runs/offline/checkpoints/tpo")
    action = policy.act(frame, "pick up the cube")      # [act_dim]

Every policy implements :class:`ActionTokenPolicy`, the interface the trainers call. Design
notes: docs/rooms/grape.md.
"""

from robopref.policies.vla.base import ActionTokenPolicy
from robopref.policies.vla.costs import (
    CollisionCounter,
    TaskCosts,
    check_task_costs,
    score_components,
    summarize_rollouts,
)
from robopref.policies.vla.evaluate import EvalProtocol, binomial_se, evaluate, evaluate_splits
from robopref.policies.vla.model import (
    ATTENTION_TARGETS,
    DEFAULT_TEMPLATE,
    OBS_MODES,
    ObsEncoder,
    VLAPolicy,
    apply_lora,
    batch_token_logprobs,
    build_tiny_vla,
    check_tokenizer,
    load_adapters,
    load_policy,
    load_pretrained_vla,
    save_adapters,
    save_policy,
    trainable_parameters,
    trajectory_logprob,
    trajectory_observations,
)
from robopref.policies.vla.preferences import (
    KEYPOINTS,
    SCORE_TERMS,
    Stage,
    build_lists,
    build_pairs,
    external_reward,
    guided_scores,
    keypoints_from_states,
    stage_costs,
)
from robopref.policies.vla.random_vlm import save_random_vlm
from robopref.policies.vla.rollouts import EnvPool, PixelSettings, rollout, scripted_demos
from robopref.policies.vla.tokenizer import ActionTokenizer, WordActionTokenizer, split_words
from robopref.policies.vla.train import (
    chosen_nll,
    flatten_steps,
    length_normalized_scores,
    pair_margins,
    reference_logprobs,
    select_rejection_sampling,
    sft_train,
    step_dpo_train,
    step_logratios,
    tpo_train,
)
from robopref.policies.vla.vlm import VLMPolicy, load_vlm, read_settings

__all__ = [
    "ATTENTION_TARGETS",
    "DEFAULT_TEMPLATE",
    "KEYPOINTS",
    "OBS_MODES",
    "SCORE_TERMS",
    "ActionTokenPolicy",
    "ActionTokenizer",
    "CollisionCounter",
    "EnvPool",
    "EvalProtocol",
    "ObsEncoder",
    "PixelSettings",
    "Stage",
    "TaskCosts",
    "VLAPolicy",
    "VLMPolicy",
    "WordActionTokenizer",
    "apply_lora",
    "batch_token_logprobs",
    "binomial_se",
    "build_lists",
    "build_pairs",
    "build_tiny_vla",
    "check_task_costs",
    "check_tokenizer",
    "chosen_nll",
    "evaluate",
    "evaluate_splits",
    "external_reward",
    "flatten_steps",
    "guided_scores",
    "keypoints_from_states",
    "length_normalized_scores",
    "load_adapters",
    "load_policy",
    "load_vlm",
    "load_pretrained_vla",
    "pair_margins",
    "read_settings",
    "reference_logprobs",
    "rollout",
    "save_adapters",
    "save_policy",
    "save_random_vlm",
    "score_components",
    "scripted_demos",
    "select_rejection_sampling",
    "sft_train",
    "split_words",
    "stage_costs",
    "step_dpo_train",
    "step_logratios",
    "summarize_rollouts",
    "tpo_train",
    "trainable_parameters",
    "trajectory_logprob",
    "trajectory_observations",
]
