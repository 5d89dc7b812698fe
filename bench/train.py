"""Training throughput: the pipeline's training stage against plain Keras and the machine.

    .venv/bin/python bench/train.py [--models logreg,mlp,deep] [--batches 128,512,2048]

For each model and batch size, three programs train the same network (raw uint8 28x28
inputs, Dropout 0.5, L2 1e-4, SGD) on the same 16,384 samples, one after the other in this
process: (a) the pipeline's `pipeline.stages.train.fit`, (b) the plain-Keras script a user would
write (`model.fit` on NumPy arrays), (c) a hand-written `tf.function` step over `tf.data`.
Each trains a warm-up epoch and 5 timed epochs, twice (the programs in turn, then in reverse
order); an epoch is the training pass plus a validation pass over 2,048 samples, and the
figure is the median of training samples/s over the 10 epochs, as GFLOP/s (6 x dense
weights x samples/s) and as a share of the fp32 matmul peak measured at the start. With
--jax, (a) and (b) also run under KERAS_BACKEND=jax in a subprocess (JAX installed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import RESULTS, Measurement, write_results  # noqa: E402

from pipeline.config.compose import default_config  # noqa: E402
from pipeline.jobs.training import fit_arguments, model_arguments, optimizer_arguments  # noqa: E402
from pipeline.stages.data import CLASSES, IMAGE_SHAPE, Split  # noqa: E402
from pipeline.stages.model import build_model, dense_weights  # noqa: E402
from pipeline.stages.train import compile_model, fit, make_optimizer, seed_everything  # noqa: E402

MODELS = {"logreg": (), "mlp": (1024,), "deep": (1024, 512, 256)}
DEFAULTS = default_config()  # a default run's settings (conf/): what a program does not vary
SAMPLES, VALID, WARMUP, EPOCHS = 16_384, 2_048, 1, 5


def data() -> tuple[Split, Split]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(SAMPLES + VALID, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=SAMPLES + VALID).astype(np.uint8)
    return Split(images[:SAMPLES], labels[:SAMPLES]), Split(images[SAMPLES:], labels[SAMPLES:])


def new_model(hidden: tuple[int, ...]) -> keras.Model:
    """`hidden` with dropout 0.5 and L2 1e-4; the rest as a default run builds it."""
    seed_everything(0)
    args = model_arguments(DEFAULTS, len(CLASSES), IMAGE_SHAPE)
    return build_model(**{**args, "hidden_units": hidden, "dropout_rate": 0.5, "l2_beta": 1e-4})


class EpochTimer(keras.callbacks.Callback):
    """Seconds per epoch (training and validation) within one `fit` call."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        float((logs or {}).get("loss", 0.0))  # JAX dispatches asynchronously: wait for the result
        self.seconds.append(time.perf_counter() - self._start)


def pipeline_stage(hidden: tuple[int, ...], batch: int, train: Split, valid: Split) -> list[float]:
    """The pipeline's own training stage: `compile_model` and `fit`, as `run` calls them."""
    model = new_model(hidden)
    train_cfg = DEFAULTS.train  # plain SGD at 0.1, 32 steps per execution
    optimizer = make_optimizer(**optimizer_arguments(train_cfg))
    compile_model(model, optimizer=optimizer, steps_per_execution=train_cfg.steps_per_execution)
    timer = EpochTimer()
    settings = fit_arguments(train_cfg)
    settings.update(epochs=WARMUP + EPOCHS, batch_size=batch, early_stopping_monitor=None)
    fit(model, train, valid, **{**settings, "verbose": 0}, callbacks=[timer])
    return timer.seconds[WARMUP:]


def plain_keras(hidden: tuple[int, ...], batch: int, train: Split, valid: Split) -> list[float]:
    """What a user writes: compile with defaults, `fit` on NumPy arrays."""
    model = new_model(hidden)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    model.fit(
        train.images,
        train.labels,
        batch_size=batch,
        epochs=WARMUP + EPOCHS,
        validation_data=(valid.images, valid.labels),
        callbacks=[timer],
        verbose=0,
    )
    return timer.seconds[WARMUP:]


def hand_written(hidden: tuple[int, ...], batch: int, train: Split, valid: Split) -> list[float]:
    """A `tf.function` training step over `tf.data`, plus a validation pass, per epoch."""
    import tensorflow as tf

    model = new_model(hidden)
    optimizer = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    batches = (
        tf.data.Dataset.from_tensor_slices((train.images, train.labels))
        .shuffle(SAMPLES, seed=0)
        .batch(batch)
        .prefetch(tf.data.AUTOTUNE)
    )
    valid_batches = tf.data.Dataset.from_tensor_slices(valid.images).batch(batch)

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)) + tf.add_n(model.losses)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    predict = tf.function(lambda x: model(x, training=False))
    seconds = []
    for _ in range(WARMUP + EPOCHS):
        start = time.perf_counter()
        for x, y in batches:
            loss = step(x, y)
        for x in valid_batches:
            predict(x)
        float(loss)
        seconds.append(time.perf_counter() - start)
    return seconds[WARMUP:]


def matmul_peak() -> tuple[float, dict[str, float]]:
    """fp32 GFLOP/s of large square matrix products, NumPy and TensorFlow; the best is peak."""
    import tensorflow as tf

    found = {}
    product = tf.function(lambda x: tf.matmul(x, x))
    for n in (2048, 4096):
        a = np.random.default_rng(0).random((n, n), dtype=np.float32)
        ta = tf.constant(a)
        for name, call in (("numpy", lambda a=a: a @ a), ("tf", lambda t=ta: product(t).numpy())):
            call()
            times = []
            for _ in range(5):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            found[f"{name}.matmul{n}"] = 2 * n**3 / min(times) / 1e9
    return max(found.values()), found


PROGRAMS = {
    "pipeline": pipeline_stage,
    "plain fit": plain_keras,
    "tf.function": hand_written,
}


def run_grid(models: list[str], batches: list[int], programs: list[str]) -> list[Measurement]:
    """Per model and batch size, each program trains one warm-up and EPOCHS timed epochs;
    the programs run twice, in order and then reversed, so that a slow spell of a shared
    machine weighs on them alike. The figure is the median over the 2 x EPOCHS epochs."""
    train, valid = data()
    rows = []
    for name in models:
        hidden = MODELS[name]
        weights = dense_weights(new_model(hidden))
        for batch in batches:
            seconds: dict[str, list[float]] = {p: [] for p in programs}
            for program in [*programs, *reversed(programs)]:
                seconds[program] += PROGRAMS[program](hidden, batch, train, valid)
            for program in programs:
                row = Measurement(
                    f"{name} b{batch} {program}", seconds[program], SAMPLES, "samples"
                )
                row.extra = {
                    "model": name,
                    "batch": batch,
                    "program": program,
                    "backend": keras.backend.backend(),
                    "gflops": 6 * weights * row.rate / 1e9,
                }
                rows.append(row)
                print(f"  {row.name:32s} {row.rate:9,.0f} samples/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="logreg,mlp,deep")
    parser.add_argument("--batches", default="128,512,2048")
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--jax", action="store_true", help="also run under KERAS_BACKEND=jax")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # the JAX subprocess's output file
    args = parser.parse_args()
    models, batches = args.models.split(","), [int(b) for b in args.batches.split(",")]
    programs = args.programs.split(",")
    if args.json:  # inside the JAX subprocess: measure and hand the rows back
        rows = run_grid(models, batches, programs)
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows]))
        return

    peak, peaks = matmul_peak()
    shown = ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
    print(f"fp32 matmul peak: {peak:.0f} GFLOP/s ({shown})")
    rows = run_grid(models, batches, programs)
    if args.jax:
        rows += jax_rows(models, batches)
    summarise(rows, peak, peaks)


def jax_rows(models: list[str], batches: list[int]) -> list[Measurement]:
    out = RESULTS / "train-jax-rows.json"
    RESULTS.mkdir(exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    command = [
        sys.executable,
        __file__,
        "--models",
        ",".join(models),
        "--batches",
        ",".join(map(str, batches)),
        "--programs",
        "pipeline,plain fit",
        "--json",
        str(out),
    ]
    if subprocess.run(command, env=env).returncode != 0:
        print("JAX backend not available: skipped (pip install -e '.[jax]')")
        return []
    return [Measurement(**row) for row in json.loads(out.read_text())]


def summarise(rows: list[Measurement], peak: float, peaks: dict[str, float]) -> None:
    plain = {
        (r.extra["model"], r.extra["batch"], r.extra["backend"]): r.rate
        for r in rows
        if r.extra["program"] == "plain fit"
    }
    tf_plain = {(m, b): rate for (m, b, be), rate in plain.items() if be == "tensorflow"}
    print(f"\nTraining throughput, fp32 matmul peak {peak:.0f} GFLOP/s")
    print(
        f"{'model':7s} {'batch':>5s} {'backend':10s} {'program':12s} {'samples/s':>10s} "
        f"{'GFLOP/s':>8s} {'% peak':>7s} {'vs fit':>7s}"
    )
    table = []
    for r in rows:
        key = (r.extra["model"], r.extra["batch"])
        ratio = r.rate / tf_plain[key] if key in tf_plain else float("nan")
        share = 100 * r.extra["gflops"] / peak
        print(
            f"{r.extra['model']:7s} {r.extra['batch']:5d} {r.extra['backend']:10s} "
            f"{r.extra['program']:12s} {r.rate:10,.0f} {r.extra['gflops']:8.1f} "
            f"{share:6.1f}% {ratio:6.2f}x"
        )
        table.append(
            {
                **r.extra,
                "samples_per_s": r.rate,
                "peak_share": share,
                "vs_plain_tf_fit": ratio,
                "seconds": r.seconds,
            }
        )
    write_results("train.json", {"peak_gflops": peak, "peaks": peaks, "rows": table})


if __name__ == "__main__":
    main()
