"""Policies trained from preferences or from relabelled data, in four sub-packages:

* :mod:`robopref.policies.offline`: offline learners on a :class:`TransitionBuffer` (IQL, AWR,
  return-filtered BC), chosen by a :class:`PolicyConfig`;
* :mod:`robopref.policies.online`: stable-baselines3 SAC / RLPD with learned rewards and demos;
* :mod:`robopref.policies.vla`: tokenised-action vision-language-action policies (SFT, TPO,
  step-level DPO, rejection sampling, GRAPE's costs);
* :mod:`robopref.policies.lm`: preference fine-tuning of language policies.

Importing this package imports none of them: each pulls its own heavy dependencies.
"""
