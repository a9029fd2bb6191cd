"""Simulated labellers: B-Pref's oracle, stochastic, myopic, mistake, skip and equal teachers and
the regret model of Knox et al., for pairs and K-item lists.

    from robopref.teachers import make_teacher, label_queries
    teacher = make_teacher("mistake", eps=0.1, seed=0)
    labelled = teacher.label(dataset, queries)
"""

from robopref.teachers.config import PRESETS, TeacherConfig, preset_config
from robopref.teachers.teacher import Teacher, label_queries, make_teacher
from robopref.teachers.values import knn_values, reward_to_go, segment_values

__all__ = [
    "PRESETS",
    "Teacher",
    "TeacherConfig",
    "knn_values",
    "label_queries",
    "make_teacher",
    "preset_config",
    "reward_to_go",
    "segment_values",
]
