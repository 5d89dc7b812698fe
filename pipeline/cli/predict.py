"""`python -m pipeline.predict model=<URI> input=<path> [output=predictions.csv]` (or
`notmnist-predict`): letters for a PNG, a folder or tar.gz of PNGs, or an IDX file, as CSV.

Unreadable files are listed and skipped; a missing or bad input (not a regular file or
folder, over the data stage's caps, or without one readable image), or a model URI that does
not load, ends the program with one line (`data error:` / `model error:`) and exit code 1, a
bad config value with `config error:` and exit code 2.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import NoReturn

from pipeline.cli import _process

_process.configure()

import hydra  # noqa: E402 - after the process settings, which must precede these imports
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pipeline.config import (  # noqa: E402
    ConfigError,
    check_predict_keys,
    config_dir,
    validate_predict,
)
from pipeline.stages.data.dataset import DataError  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(config_dir() / "predict"), config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        settings = validate_predict(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as exc:
        _fail(f"config error: {exc}", 2)

    # the input is checked first, in a second rather than after TensorFlow's import: this
    # module imports neither TensorFlow nor MLflow
    from pipeline.jobs.prediction import NoImagesError, input_format
    from pipeline.stages.data.sources import MAX_MEMBER_BYTES, MAX_TOTAL_BYTES

    max_member = settings.max_member_bytes or MAX_MEMBER_BYTES
    max_total = settings.max_total_bytes or MAX_TOTAL_BYTES
    try:
        input_format(Path(settings.input), max_member)  # said before the model loads
    except DataError as exc:
        _fail(f"data error: {exc}", 1)

    _process.import_tensorflow_without_jax()  # only once the config and input are known good
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.jobs.prediction import load_model, predict_files
    from pipeline.tracking.model_files import ModelFileError
    from pipeline.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(settings.tracking_uri))
    try:
        model = load_model(settings.model)
    except (MlflowException, OSError, ModelFileError) as exc:
        _fail(f"model error: model={settings.model}: {_first_line(exc)}", 1)
    started = time.perf_counter()
    try:
        outcome = predict_files(
            model,
            Path(settings.input),
            Path(settings.output),
            settings.convert,
            settings.batch_size,
            max_member,
            max_total,
        )
    except NoImagesError as exc:
        _print_skipped(exc.skipped)
        _fail(f"data error: {exc}", 1)
    except DataError as exc:
        _fail(f"data error: {exc}", 1)
    except MlflowException as exc:  # the model refused the images
        _fail(f"model error: model={settings.model}: {_first_line(exc)}", 1)
    elapsed = time.perf_counter() - started
    _print_skipped(outcome.skipped)
    rate = f", {outcome.read / elapsed:,.0f} images/s" if outcome.read else ""
    print(
        f"Read {outcome.read} images, skipped {len(outcome.skipped)}; "
        f"predictions in {outcome.output} ({elapsed:.2f} s after start-up{rate})"
    )


def _print_skipped(skipped: list[tuple[str, str]]) -> None:
    for name, reason in skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)


def _first_line(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message).strip().splitlines()[0] if str(message).strip() else type(exc).__name__


def _fail(message: str, code: int) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(code)


def main() -> None:
    """The console script: reject unknown keys with the allowed ones named, then run Hydra."""
    try:
        check_predict_keys(sys.argv[1:])
    except ConfigError as exc:
        _fail(f"config error: {exc}", 2)
    _hydra_main()
