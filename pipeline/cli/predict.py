"""`notmnist predict model=<URI> input=<path> [output=...]`: letters for a PNG, a folder or
tar.gz of PNGs, or an IDX file, as CSV.

Unreadable files are listed and skipped; a missing or bad input (not a regular file or
folder, over the data stage's caps, or without one readable image) is a data error, a model
URI that does not load a model error (exit code 1).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import process
from pipeline.cli._hydra import run_hydra
from pipeline.config import check_predict_keys, validate_predict
from pipeline.config.schema import PredictConfig
from pipeline.errors import ModelError


def run(args: list[str]) -> int:
    run_hydra("predict/predict", _job, args, check=check_predict_keys)
    return 0


def output_path(settings: PredictConfig) -> Path:
    """`output`, else outputs/predictions/<input's name>.csv (outputs/ is git-ignored)."""
    if settings.output:
        return Path(settings.output)
    name = Path(settings.input.rstrip("/")).name.split(".")[0] or "predictions"
    return Path("outputs") / "predictions" / f"{name}.csv"


def _job(cfg: DictConfig) -> None:
    settings = validate_predict(OmegaConf.to_container(cfg, resolve=True))

    # the input is checked first, in a second rather than after TensorFlow's import: this
    # module imports neither TensorFlow nor MLflow
    from pipeline.jobs.prediction import NoImagesError, input_format
    from pipeline.stages.data.sources import MAX_MEMBER_BYTES, MAX_TOTAL_BYTES

    max_member = settings.max_member_bytes or MAX_MEMBER_BYTES
    max_total = settings.max_total_bytes or MAX_TOTAL_BYTES
    input_format(Path(settings.input), max_member)  # said before the model loads

    process.import_tensorflow_without_jax()  # only once the config and input are known good
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.jobs.prediction import load_model, predict_files
    from pipeline.tracking.store.connect import reach

    mlflow.set_tracking_uri(reach(settings.tracking_uri))
    try:
        model = load_model(settings.model)
    except (MlflowException, OSError) as exc:
        raise ModelError(f"model={settings.model}: {_first_line(exc)}") from None
    started = time.perf_counter()
    try:
        outcome = predict_files(
            model,
            Path(settings.input),
            output_path(settings),
            settings.convert,
            settings.batch_size,
            max_member,
            max_total,
        )
    except NoImagesError as exc:
        _print_skipped(exc.skipped)
        raise
    except MlflowException as exc:  # the model refused the images
        raise ModelError(f"model={settings.model}: {_first_line(exc)}") from None
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
