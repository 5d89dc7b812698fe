"""Prediction throughput: images per second after start-up, on the shared notMNIST tar.gz.

    .venv/bin/python bench/predict.py [--repeats 5] [--model URI]

Without --model, the default network (`mlp`, 1,024 hidden units; untrained weights cost the
same to run) is logged as the pipeline logs it into a throw-away store and loaded back with
`pipeline.jobs.prediction.load_model`, as `notmnist predict` loads it. Start-up (imports, model
loading, the first call's tracing) is left out: one untimed warm-up call, then each step
timed alone and the whole `predict_files` (read the archive, decode, predict, write the CSV).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import measure, report

from pipeline.jobs.prediction import (
    load_model,
    predict_files,
    predict_probabilities,
    read_images,
    write_csv,
)

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "notmnist-sample"


def logged_default_model(folder: Path) -> str:
    """The default network, logged by the pipeline's own code into a store under `folder`."""
    import mlflow
    import numpy as np

    from pipeline.config.compose import default_config
    from pipeline.jobs.training import model_arguments
    from pipeline.stages.data import CLASSES, IMAGE_SHAPE
    from pipeline.stages.model import build_model
    from pipeline.tracking.models.classifier import log_keras_model

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    with mlflow.start_run():
        network = build_model(**model_arguments(default_config(), len(CLASSES), IMAGE_SHAPE))
        return log_keras_model(network, np.zeros((2, 28, 28), dtype=np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", help="a model URI (default: the untrained default network)")
    parser.add_argument("--input", type=Path, default=SAMPLE / "notMNIST_sample.tar.gz")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = load_model(args.model or logged_default_model(folder))
        images = read_images(args.input)
        n = len(images.names)
        out = folder / "predictions.csv"
        probabilities = predict_probabilities(model, images.pixels, 8192)
        rows = [
            measure(
                "predict_files (read, decode, predict, CSV)",
                lambda: predict_files(model, args.input, out),
                n,
                "img",
                args.repeats,
            ),
            measure("read + decode (tar.gz)", lambda: read_images(args.input), n, "img"),
            measure(
                "predict (pyfunc, 8192 per call)",
                lambda: predict_probabilities(model, images.pixels, 8192),
                n,
                "img",
                args.repeats,
            ),
            measure(
                "write CSV",
                lambda: write_csv(out, images.names, probabilities),
                n,
                "img",
                args.repeats,
            ),
        ]
    report(
        f"Prediction on {args.input.name} ({n} images, {os.cpu_count()} cores)",
        rows,
        rows[0].name,
        "predict.json",
    )


if __name__ == "__main__":
    main()
