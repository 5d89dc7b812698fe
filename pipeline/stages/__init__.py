"""The stages of a run: data, model, train, evaluate. Plain functions with explicit
arguments; none of them knows about the config or MLflow."""
