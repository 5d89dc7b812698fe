"""Reproducible notMNIST training with Hydra configs and MLflow tracking.

The package is laid out by role: `stages/` (data, model, train, evaluate: plain functions),
`tracking/` (MLflow), `reporting/` (comparisons, figures, reports), `jobs/` (what a command
does, composed from those) and `cli/` (the entry points). Importing it changes nothing in the
process: the entry points make the process-wide settings.
"""

__version__ = "0.1.0"
