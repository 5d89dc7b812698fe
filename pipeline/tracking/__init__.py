"""MLflow plumbing, in four rooms that import only downward (store <- runs <- recording,
models): the store and its locks (`store`), a run's life cycle (`runs`), what a training run
records and the helper process that records it (`recording`), logged models and the registry
(`models`). Orchestration (sweeps, searches, retraining) lives in `pipeline.jobs`.

Importing this package imports nothing else: the trainer never loads MLflow itself (its
`recorder` talks to the helper), and the sweep callback and the report stay cheap.
"""
