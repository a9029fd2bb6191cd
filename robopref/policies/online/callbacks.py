"""stable-baselines3 callbacks for online RL on learned rewards."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


class OTRelabelCallback(BaseCallback):
    """Overwrites the replay-buffer rewards of each finished episode with the full-episode OT
    rewards that :class:`OTRewardWrapper` (``mode="episode"``) put in ``info["ot_rewards"]``.

    SB3 calls ``_on_step`` after ``env.step`` and before storing that transition, so the
    episode's first ``T - 1`` transitions sit at ``pos - T + 1 .. pos - 1`` (mod buffer size)
    and the last one (stored at ``pos``) already got its OT reward from the wrapper.
    """

    def __init__(self) -> None:
        super().__init__()
        self.episodes = 0
        self.relabelled = 0

    def _on_step(self) -> bool:
        buf = getattr(self.model, "replay_buffer", None)
        for i, info in enumerate(self.locals.get("infos", [])):
            rewards = info.get("ot_rewards")
            if rewards is None or buf is None:
                continue
            prev = np.asarray(rewards[:-1], dtype=np.float32)[-buf.buffer_size :]
            if len(prev):
                idx = (buf.pos - len(prev) + np.arange(len(prev))) % buf.buffer_size
                buf.rewards[idx, i] = prev
            self.episodes += 1
            self.relabelled += len(prev)
        return True


class GroundTruthLogger(BaseCallback):
    """Logs the env's own return (``info["gt_reward"]``, else the reward) and success of every
    training episode as ``rollout/gt_return`` and ``rollout/gt_success`` (TensorBoard), so a
    run on a learned reward shows whether it also solves the task. ``self.returns`` and
    ``self.successes`` keep one entry per finished episode."""

    def __init__(self) -> None:
        super().__init__()
        self.returns: list[float] = []
        self.successes: list[bool] = []
        self._ret: np.ndarray | None = None
        self._succ: np.ndarray | None = None

    def _on_step(self) -> bool:
        infos, rewards, dones = (
            self.locals["infos"],
            self.locals["rewards"],
            self.locals["dones"],
        )
        if self._ret is None:
            self._ret, self._succ = np.zeros(len(infos)), np.zeros(len(infos), dtype=bool)
        for i, info in enumerate(infos):
            self._ret[i] += float(info.get("gt_reward", rewards[i]))
            self._succ[i] |= bool(info.get("success", False))
            if dones[i]:
                self.returns.append(float(self._ret[i]))
                self.successes.append(bool(self._succ[i]))
                self.logger.record_mean("rollout/gt_return", self.returns[-1])
                self.logger.record_mean("rollout/gt_success", float(self.successes[-1]))
                self._ret[i], self._succ[i] = 0.0, False
        return True
