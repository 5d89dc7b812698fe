"""The project's errors, one hierarchy: what went wrong in one line, and the exit code it means.

Code at every layer raises these; only the command kernel (`pipeline.cli.main`) prints one,
as `<kind>: <message>`, and exits with its code. Nothing below the kernel prints and exits.

| error             | kind           | exit |
|-------------------|----------------|------|
| ConfigError       | config error   | 2    |
| TrackingError     | tracking error | 2    |
| DataError         | data error     | 1    |
| ModelError        | model error    | 1    |
| TrainingError     | training error | 1    |
| RegistryError     | registry error | 1    |
| RunsFailedError   | failed         | 1    |
| LockedOutError    | locked out     | 3    |
| NotIdenticalError | not identical  | 3    |
| StoppedError      | interrupted    | 130  |
"""

from __future__ import annotations


class Abort(BaseException):
    """Carries a PipelineError through code that turns every Exception into a warning and
    goes on (Hydra's callbacks): a sweep that cannot start, or whose jobs failed, must stop
    and say so. The command kernel raises `error` again."""

    def __init__(self, error: PipelineError) -> None:
        super().__init__(str(error))
        self.error = error


class PipelineError(Exception):
    """An error the person can act on; `str()` is one line: what, where, and what to do."""

    kind = "error"
    exit_code = 1


class ConfigError(PipelineError, ValueError):
    """A setting is unknown, of the wrong type or out of range, or asks for what is refused."""

    kind = "config error"
    exit_code = 2


class TrackingError(PipelineError, RuntimeError):
    """The tracking store cannot be used (unreachable, unwritable, a schema it cannot read)."""

    kind = "tracking error"
    exit_code = 2


class DataError(PipelineError, ValueError):
    """A data source is missing, ambiguous, unsafe or unreadable; the message names it."""

    kind = "data error"
    exit_code = 1


class ModelError(PipelineError, ValueError):
    """A model cannot be loaded, or its files are not those of a model this pipeline logged."""

    kind = "model error"
    exit_code = 1


class TrainingError(PipelineError, RuntimeError):
    """Training cannot go on (the loss became NaN)."""

    kind = "training error"
    exit_code = 1


class RegistryError(PipelineError, RuntimeError):
    """The model registry refused or failed a request."""

    kind = "registry error"
    exit_code = 1


class RunsFailedError(PipelineError, RuntimeError):
    """Work that ran and did not succeed (a sweep's job, a study's trials): said in full in
    the runs it recorded; the line says where."""

    kind = "failed"
    exit_code = 1


class LockedOutError(PipelineError, RuntimeError):
    """Another process holds the lock this work needs (another retraining attempt)."""

    kind = "locked out"
    exit_code = 3


class NotIdenticalError(PipelineError, RuntimeError):
    """A reproduction's result differs from the run it reproduces."""

    kind = "not identical"
    exit_code = 3


class StoppedError(PipelineError):
    """Stopped by Ctrl-C or SIGTERM; the runs it had open end KILLED."""

    kind = "interrupted"
    exit_code = 130
