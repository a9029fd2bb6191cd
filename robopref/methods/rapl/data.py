"""The data of the ``rapl`` recipe: collected (or read) episodes rendered to videos, split into
demos, train and held-out videos, and the labelled queries over them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robopref.data import PreferenceQueries, TrajectoryDataset, load_dataset
from robopref.envs import collect_dataset
from robopref.envs.render import render_dataset, strided_video
from robopref.methods.rapl.config import Config
from robopref.teachers import label_queries, make_teacher


@dataclass
class Videos:
    """The rendered dataset split for the recipe: demos, train and held-out videos."""

    ds: TrajectoryDataset
    videos: np.ndarray  # [N, T', H, W, 3] every trajectory's frames
    stride: int  # env steps per frame
    horizon: int  # env steps per episode
    demos: list[int]  # expert episodes: alignment anchors and the OT reward's demos
    train_ids: np.ndarray
    test_ids: np.ndarray


def data_key(config: Config) -> dict:
    collect = config.collect_config.model_dump(mode="json", exclude={"num_workers", "start_method"})
    return {"collect": collect, "render": config.render, "dataset": config.dataset}


def collect_videos(config: Config) -> TrajectoryDataset:
    """The collected (or read) dataset with rendered frames."""
    collect = config.collect_config
    ds = load_dataset(config.dataset) if config.dataset else None
    if ds is None:
        ds = collect_dataset(collect, progress=True, label="collect[rapl]")
    if all(isinstance(t.observations, dict) and "image" in t.observations for t in ds):
        return ds
    # check_states=False: Meta-World's scripted policies of some tasks (door-open, ...) edit the
    # observation in place, which corrupts stored states of other_task episodes; the replay
    # itself is exact.
    return render_dataset(ds, config.render, collect.max_episode_steps, collect.goal_observable,
                          check_states=False, progress=True)  # fmt: skip


def split_videos(ds: TrajectoryDataset, config: Config, rng: np.random.Generator) -> Videos:
    lengths = {len(t) for t in ds}
    if len(lengths) != 1:
        raise ValueError(
            f"dataset: expected episodes of one length, found lengths {sorted(lengths)}"
        )
    experts = [i for i, t in enumerate(ds) if t.metadata.get("mode") == "expert"]
    if len(experts) < config.num_demos:  # a dataset read from a file; collected ones are checked
        raise ValueError(
            f"num_demos: expected <= {len(experts)} (expert episodes in the data), found "
            f"{config.num_demos}"
        )
    demos = experts[: config.num_demos]
    rest = rng.permutation([i for i in range(len(ds)) if i not in demos])
    n_test = max(2, int(round(config.test_fraction * len(rest))))
    return Videos(
        ds=ds,
        videos=np.stack([strided_video(t) for t in ds]),
        stride=int(ds[0].metadata.get("image_stride", 1)),
        horizon=lengths.pop(),
        demos=demos,
        train_ids=np.sort(rest[n_test:]),
        test_ids=np.sort(rest[:n_test]),
    )


def label_videos(data: Videos, config: Config) -> tuple[PreferenceQueries, PreferenceQueries]:
    """Ranked ``query_k``-tuples of train videos (the largest budget; a budget takes the first
    ones) and held-out oracle pairs."""
    train_q = label_queries(data.ds, make_teacher(config.teacher), max(config.budgets),
                            k=config.query_k, segment_length=data.horizon, seed=config.seed,
                            trajectory_ids=data.train_ids)  # fmt: skip
    eval_q = label_queries(data.ds, make_teacher("oracle"), config.eval_queries, k=2,
                           segment_length=data.horizon, seed=config.seed + 1,
                           trajectory_ids=data.test_ids)  # fmt: skip
    return train_q, eval_q
