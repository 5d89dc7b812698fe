"""A hyperparameter search: an Optuna study whose trials are ordinary pipeline runs.

Every trial is `pipeline.jobs.training.run` with the trial's values set on the typed config,
a child MLflow run under the study's one parent run. Any number of workers (local processes,
other machines) work on one study through its storage; each worker decodes the data once and
takes trials until the study's budget is spent. One module per job:

- `storage`: where the study lives (a journal file with heartbeats, or a database of its
  own); the only module that touches Optuna's private API;
- `study`: the study, its parent run and the record of what it was started with, which a
  joining worker must match;
- `worker`: the loop that takes trials, with the heartbeat of the running one;
- `seeds`: the best trials again over more seeds, before the export;
- `report`: the parent run's report (Optuna's figures, the comparison, the seeds' spread);
- `export`: the best trial as an experiment file where `search.export` says;
- `command`: `notmnist search`, with its local helper workers.
"""
