"""``rantune demo``: data, federated fine-tuning, strategy comparison, compression, edge."""

from rantune.simulations.demo.pipeline import DemoPlan, demo_plan, run_demo

__all__ = ["DemoPlan", "demo_plan", "run_demo"]
