"""Experiments: data sets, conditioning tasks, paper models and baselines, the trainer.

Uses the library (topology, layers, optimisation) through its public API only.
"""
