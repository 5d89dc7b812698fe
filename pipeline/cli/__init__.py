"""The entry points: thin commands that set up the process, check their input and call the
library. `python -m pipeline[.<command>]` and the `notmnist-*` console scripts run these."""
