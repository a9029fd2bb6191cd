"""Step ``train-reward``: a reward model fitted to a file's preference labels.

    read DATA (labelled queries) -> hold out ``test_fraction`` of the queries -> fit the reward
    (any loss of the core; MLP, ensemble or Gaussian on vectors; a CNN or an ensemble of CNNs
    on camera frames) -> held-out preference accuracy ± SE
    -> ``reward.pt`` plus its card ``reward.card.json`` (config, data hash, metrics)

The card is what ``score`` and ``relabel`` read to find the observation key and its per-step
shape (``obs_shape``: ``[D]`` or ``[H, W, 3]``) and to record where a learned reward came from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from robopref.methods.common import RunResult, Stage, file_fingerprint, start_run
from robopref.methods.own_data.config import RewardModelConfig, TrainRewardConfig
from robopref.methods.own_data.data import (
    card_path,
    describe,
    observation_view,
    read_dataset,
    require_labels,
)
from robopref.methods.own_data.results import reward_result
from robopref.progress import is_quiet
from robopref.utils import atomic_path

Config = TrainRewardConfig
CARD_FORMAT = "robopref.reward_card/1"


def make_reward_model(config: RewardModelConfig, obs_shape: tuple[int, ...], act_dim: int):
    """The reward ``config`` names for observations of per-step shape ``obs_shape``: vectors
    ``(D,)`` or frames ``(H, W, 3)`` (a CNN reward)."""
    from robopref.rewards import (
        EnsembleReward,
        GaussianReward,
        ImageEnsembleReward,
        ImageReward,
        MLPReward,
    )

    act_dim = act_dim if config.use_actions else 0
    if len(obs_shape) == 3:
        image = config.image.model_dump()
        if config.kind == "ensemble":
            return ImageEnsembleReward(
                obs_shape, act_dim, n_members=config.members, hidden=config.hidden, **image
            )
        return ImageReward(obs_shape, act_dim, hidden=config.hidden, **image)
    obs_dim = obs_shape[0]
    if config.kind == "ensemble":
        return EnsembleReward(obs_dim, act_dim, n_members=config.members, hidden=config.hidden)
    if config.kind == "gaussian":
        return GaussianReward(
            obs_dim,
            act_dim,
            hidden=config.hidden,
            prior_std=config.prior_std,
            reg_weight=config.reg_weight,
        )
    return MLPReward(obs_dim, act_dim, hidden=config.hidden)


def run(config: TrainRewardConfig, out_dir: str | Path) -> RunResult:
    from robopref.data import DataValidationError
    from robopref.rewards import RewardTrainer, load_reward, save_reward

    # every check on the input before the run folder exists: bad input writes nothing
    dataset = read_dataset(config.data)
    require_labels(dataset, config.data, "train-reward")
    view = observation_view(dataset, config.obs_key, config.data)
    obs_shape = tuple(int(x) for x in view[0].observations.shape[1:])
    if len(obs_shape) == 3 and config.model.kind == "gaussian":
        raise DataValidationError(
            f"{config.data}: model.kind: expected mlp or ensemble for the image key "
            f"{config.obs_key!r} ({describe(obs_shape)}), found gaussian (state keys only)"
        )
    queries = view.queries
    if queries.label_kind == "soft_pair" and not config.trainer.soft_capable:
        raise DataValidationError(
            f"{config.data}: preferences: soft pair labels need trainer.loss=bt, "
            f"found trainer.loss={config.trainer.loss}"
        )
    n = len(queries)
    n_test = max(1, round(config.test_fraction * n))
    if n - n_test < 1:
        raise DataValidationError(
            f"{config.data}: preferences: expected at least 2 labelled queries (one to train on, "
            f"one held out), found {n}"
        )
    out_dir, rng = start_run(config, out_dir)
    order = rng.permutation(n)
    test_q, train_q = queries.subset(order[:n_test]), queries.subset(order[n_test:])
    act_dim = view[0].actions.shape[1]
    data_hash = file_fingerprint(config.data)

    trainer_config = config.trainer.model_copy(
        update={
            "seed": config.seed,
            "device": config.device,
            "log_dir": str(out_dir / "tb" / "reward"),
            "quiet": is_quiet() or config.trainer.quiet,
        }
    )
    model = make_reward_model(config.model, obs_shape, act_dim)
    history: list[dict] = []

    def fit():
        trainer = RewardTrainer(model, trainer_config)
        history.extend(trainer.fit(view, train_q))
        return trainer.model

    key = config.model_dump(mode="json", exclude={"device", "num_threads", "method"})
    stage = Stage("reward[train-reward]", out_dir / "reward.pt", key=key, reads=[config.data])
    model = stage.run(fit, save_reward, load_reward)
    scorer = RewardTrainer(model, trainer_config.model_copy(update={"log_dir": None}))
    test_acc = float(scorer.accuracy(view, test_q))
    train_acc = float(scorer.accuracy(view, train_q))
    kind = config.model.kind
    row = {
        "model": kind
        if len(obs_shape) == 1
        else "cnn" + ("-ensemble" if kind == "ensemble" else ""),
        "loss": config.trainer.loss,
        "k": int(queries.k),
        "obs_key": config.obs_key,
        "obs_shape": list(obs_shape),
        "seed": config.seed,
        "train_queries": int(len(train_q)),
        "test_queries": int(n_test),
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "test_se": math.sqrt(test_acc * (1 - test_acc) / n_test) if test_acc == test_acc else None,
        "epochs": len(history) or None,
    }
    card = {
        "format": CARD_FORMAT,
        "obs_key": config.obs_key,
        "obs_kind": "image" if len(obs_shape) == 3 else "state",
        "obs_shape": list(obs_shape),
        "obs_dim": int(obs_shape[0]) if len(obs_shape) == 1 else None,
        "act_dim": int(act_dim if config.model.use_actions else 0),
        "model": row["model"],
        "data": {
            "path": str(Path(config.data).resolve()),
            "sha256": data_hash,
            "episodes": len(dataset),
            "queries": n,
            "k": int(queries.k),
            "teacher": queries.teacher,
        },
        "checkpoint_sha256": file_fingerprint(out_dir / "reward.pt"),
        "metrics": {k: row[k] for k in ("train_accuracy", "test_accuracy", "test_se")},
        "config": config.model_dump(mode="json"),
    }
    with atomic_path(card_path(out_dir / "reward.pt")) as tmp:
        tmp.write_text(json.dumps(card, indent=1) + "\n")
    return reward_result(row, out_dir)
