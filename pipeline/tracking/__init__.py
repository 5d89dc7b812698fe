"""MLflow plumbing: the store (`store`), a run's life cycle (`runs`), what a run records
(`records`, `models`, `callbacks`), the helper process that records a training run
(`recorder`, `writer`) and sweeps as parent runs (`sweep`).

Importing this package imports nothing else: the trainer never loads MLflow itself (its
`recorder` talks to the helper), and the sweep callback and the report stay cheap.
"""
