"""Downstream tasks: LoS/NLoS, beam selection and channel prediction.

>>> task = get_task("los")
>>> x, y = task.tensors(dataset, rows)             # inputs and targets
>>> model = build_task_model(task, encoder, radio)  # encoder + small head
"""

from __future__ import annotations

from rantune.errors import InputError
from rantune.tasks.base import Task, TaskModel, build_task_model, predict
from rantune.tasks.classification import BeamTask, LosTask
from rantune.tasks.prediction import PredictionTask

TASKS = ("los", "beam", "prediction")

__all__ = ["TASKS", "Task", "TaskModel", "build_task_model", "get_task", "predict"]


def get_task(name: str) -> Task:
    """Task by name: ``los``, ``beam`` or ``prediction``."""
    if name == "los":
        return LosTask()
    if name == "beam":
        return BeamTask()
    if name == "prediction":
        return PredictionTask()
    raise InputError(f"task {name!r} is unknown: choose one of {', '.join(TASKS)}")
