"""Meta-World v3 tasks as gymnasium envs, vector envs, scripted policies and data collection.

>>> from robopref.envs import make_env, collect_dataset, CollectConfig
>>> env = make_env("button-press-v3", seed=0, max_episode_steps=200)
>>> ds = collect_dataset(CollectConfig(tasks=["button-press-v3"]), progress=False)
"""

from robopref.envs.collect import (
    DEFAULT_OTHER_TASKS,
    MODES,
    CollectConfig,
    EpisodeSpec,
    collect_dataset,
    plan_episodes,
)
from robopref.envs.render import (
    CAMERAS,
    FrameRenderer,
    RenderConfig,
    collect_pixel_dataset,
    render_dataset,
    render_trajectory,
    replay_frames,
    strided_video,
)
from robopref.envs.rollout import Episode, evaluate_on_task, run_episode
from robopref.envs.tasks import (
    ACT_DIM,
    INSTRUCTIONS,
    OBS_DIM,
    MetaWorldTask,
    ScriptedPolicy,
    UnknownTaskError,
    check_task,
    instruction,
    list_tasks,
    make_env,
    make_vector_env,
    scripted_policy,
)
from robopref.envs.wrappers import (
    FixedConfigurationWrapper,
    OTRewardWrapper,
    StateRewardWrapper,
)

__all__ = [
    "CAMERAS",
    "FrameRenderer",
    "OTRewardWrapper",
    "StateRewardWrapper",
    "FixedConfigurationWrapper",
    "RenderConfig",
    "collect_pixel_dataset",
    "render_dataset",
    "render_trajectory",
    "replay_frames",
    "strided_video",
    "ACT_DIM",
    "DEFAULT_OTHER_TASKS",
    "INSTRUCTIONS",
    "MODES",
    "OBS_DIM",
    "CollectConfig",
    "Episode",
    "EpisodeSpec",
    "MetaWorldTask",
    "ScriptedPolicy",
    "UnknownTaskError",
    "check_task",
    "collect_dataset",
    "evaluate_on_task",
    "instruction",
    "list_tasks",
    "make_env",
    "make_vector_env",
    "plan_episodes",
    "run_episode",
    "scripted_policy",
]
