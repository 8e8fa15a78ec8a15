"""Downstream tasks (3GPP TR 38.843 use cases): LoS/NLoS, beam management, prediction, positioning.

>>> task = get_task("beam-spatial")                  # task options: TaskSettings
>>> x, y = task.tensors(dataset, rows)               # the observation and the target
>>> model = build_task_model(task, encoder, radio)   # gate + encoder + small head

==================== ==================================================================
name                 task
==================== ==================================================================
``los``              LoS/NLoS from the noisy CSI estimate (AUC)
``beam``             best beam from the full noisy CSI estimate (the earlier task, kept
                     unchanged for existing configs; exhaustive search nearly solves it)
``beam-spatial``     BM-Case1: best beam of Set A from Set B RSRPs or partial CSI
``beam-temporal``    BM-Case2: best beam ``horizon`` slots ahead from past observations
``prediction``       CSI ``horizon`` slots ahead from noisy past estimates (NMSE dB)
``positioning``      horizontal UE position on ray-traced stations (90th-pct error)
==================== ==================================================================
"""

from __future__ import annotations

from rantune.errors import InputError
from rantune.tasks.base import Task, TaskModel, build_task_model, predict
from rantune.tasks.beam_spatial import BeamSpatialTask
from rantune.tasks.beam_temporal import BeamTemporalTask
from rantune.tasks.classification import BeamTask, LosTask
from rantune.tasks.positioning import PositioningTask
from rantune.tasks.prediction import PredictionTask
from rantune.tasks.settings import TaskSettings

TASKS = ("los", "beam", "beam-spatial", "beam-temporal", "prediction", "positioning")
# Tasks whose head is a classification head (run config ``model.head``); the sequence
# tasks have their own heads.
HEADED_TASKS = ("los", "beam", "beam-spatial", "positioning")

__all__ = [
    "HEADED_TASKS",
    "TASKS",
    "Task",
    "TaskModel",
    "TaskSettings",
    "build_task_model",
    "get_task",
    "predict",
]


def get_task(name: str, settings: TaskSettings | None = None, head: str | None = None) -> Task:
    """Task by name (see the module docstring).

    Parameters
    ----------
    name : one of :data:`TASKS`.
    settings : task options (``task-options.*``); default :class:`TaskSettings`().
    head : classification head of the :data:`HEADED_TASKS`
        (``rantune.tasks.classification.CLASSIFICATION_HEADS``); default the task's own.
        Ignored by the sequence tasks, which have their own heads.
    """
    settings = settings or TaskSettings()
    kwargs = {} if head is None or name not in HEADED_TASKS else {"head": head}
    if name == "los":
        return LosTask(**kwargs)
    if name == "beam":
        return BeamTask(**kwargs)
    if name == "beam-spatial":
        return BeamSpatialTask(settings, **kwargs)
    if name == "beam-temporal":
        return BeamTemporalTask(settings)
    if name == "prediction":
        return PredictionTask(settings)
    if name == "positioning":
        return PositioningTask(**kwargs)
    raise InputError(f"task {name!r} is unknown: choose one of {', '.join(TASKS)}")
