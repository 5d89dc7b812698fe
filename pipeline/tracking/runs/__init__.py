"""A run's life cycle: opening and ending every kind of run (`lifecycle`), what ends it other
than success (`outcome`), the process that owns it (`processes`), stale runs and audit runs."""
