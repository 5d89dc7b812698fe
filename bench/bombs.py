"""Hostile inputs: peak memory and time to a one-line error, each case in a fresh process.

    .venv/bin/python bench/bombs.py [--code DIR] [--label NAME] [--timeout 60]

`--code` runs another checkout's package (the code before a change: `git archive <commit> |
tar -x -C DIR`) with this checkout's environment. Each case is one process that reads one
input the way the pipeline does (a training source through `load_notmnist`, a prediction
input through `read_images`) and prints its outcome; its peak resident memory comes from
`os.wait4` (the kernel's `ru_maxrss` of that process alone, which starts from this small
process's size at the fork), its time from start to exit (interpreter and imports
included). Every case runs under an address-space limit (`--memory-limit`, 6 GiB) so that
a reader that does not bound memory fails with MemoryError instead of taking the machine;
a case still running after `--timeout` seconds is killed.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import os
import resource
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_TAR = ROOT.parent / "shared" / "data" / "notmnist-sample" / "notMNIST_sample.tar.gz"
_MIB = 1 << 20

# What one case runs: `train <path> [key=int ...]` or `predict <path>`.
_CHILD = """
import json
import os
import sys
from pathlib import Path
from pipeline.stages.data.dataset import DataError
kind, path, *caps = sys.argv[1:]
try:
    if kind == "predict":
        from pipeline.jobs.prediction import read_images
        images = read_images(Path(path))
        print(f"read {len(images.names)} images, skipped {len(images.skipped)}")
    else:
        from pipeline.stages.data.notmnist import load_notmnist
        given = {k: int(v) for k, v in (c.split("=") for c in caps)}
        settings = json.loads(os.environ["BENCH_DATA_SETTINGS"])  # conf/data/notmnist.yaml's
        data = load_notmnist(**{**settings, "path": path, **given})
        print(f"read {data.report.decoded} images")
except DataError as exc:
    print(f"data error: {exc}")
"""


@dataclass
class Result:
    case: str
    code: str
    peak_mib: float
    seconds: float
    outcome: str


def zero_members_tar(path: Path, members: int, mib_each: int) -> Path:
    """A .tar.gz of `members` letter files of `mib_each` MiB of zeros, written in 1 MiB
    blocks (never held whole): each member passes a 64 MiB member cap."""
    block = bytes(_MIB)
    with gzip.open(path, "wb", compresslevel=9) as out:
        for i in range(members):
            info = tarfile.TarInfo(f"bomb/{'ABCDEFGHIJ'[i % 10]}/{i:02d}.png")
            info.size = mib_each * _MIB
            out.write(info.tobuf())
            for _ in range(mib_each):
                out.write(block)
        out.write(bytes(1024))  # the end-of-archive marker
    return path


def cases(scratch: Path) -> list[tuple[str, list[str]]]:
    """(description, child arguments) of every case, inputs made in `scratch`."""
    bomb = zero_members_tar(scratch / "bomb.tar.gz", 32, 63)
    sparse = scratch / "big.png"
    with sparse.open("wb") as handle:
        handle.truncate(3_000_000_000)  # sparse: no disk used
    (scratch / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(scratch / "fifo.png")
    size = f"{bomb.stat().st_size / 1e6:.1f} MB"
    found = [
        (f"train: tar.gz of 32 x 63 MiB members ({size})", ["train", str(bomb)]),
        (
            "train: the same, data.max_total_bytes=4 GiB",
            ["train", str(bomb), f"max_total_bytes={4 << 30}"],
        ),
        ("predict: 3 GB sparse file big.png", ["predict", str(sparse)]),
        ("predict: zero.png -> /dev/zero", ["predict", str(scratch / "zero.png")]),
        ("predict: FIFO fifo.png", ["predict", str(scratch / "fifo.png")]),
    ]
    if SAMPLE_TAR.exists():
        found.append(("predict: the sample tar.gz (reference)", ["predict", str(SAMPLE_TAR)]))
    return found


@functools.cache
def data_settings() -> str:
    """A training source's settings (conf/data/notmnist.yaml, data.cache=false) as JSON, for
    `load_notmnist`, whose settings have no defaults: composed in a process of its own, so
    that this one stays small (a case's peak memory starts from its size at the fork)."""
    script = (
        "import json; from pipeline.config.compose import default_config; "
        "data = default_config('data=notmnist', 'data.path=-', 'data.cache=false').data; "
        "print(json.dumps(data.model_dump(exclude={'source'})))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"composing the data settings failed: {done.stderr[-2000:]}")
    return done.stdout.strip()


def run_case(args: list[str], code: Path, limit: int, timeout: float) -> tuple[float, float, str]:
    """(peak MiB, seconds, outcome) of one case in a fresh process."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["BENCH_DATA_SETTINGS"] = data_settings()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, *args],
        cwd=code,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit_memory,  # only sets a limit: safe before exec
    )
    hung = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            proc.send_signal(signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            hung = True
            break
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: Popen must not wait
    out, err = proc.communicate()
    if hung:
        outcome = f"still running after {timeout:.0f} s: killed"
    elif proc.returncode:
        last = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        outcome = f"traceback ({len(err.splitlines())} lines): {last}"
    else:
        outcome = out.strip().splitlines()[-1]
    return usage.ru_maxrss / 1024, seconds, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--memory-limit", type=int, default=6 << 30, help="bytes of address space")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as name:
        for case, child in cases(Path(name)):
            peak, seconds, outcome = run_case(child, args.code, args.memory_limit, args.timeout)
            results.append(Result(case, args.label, peak, seconds, outcome))
            print(f"{case:48s} {peak:8,.0f} MiB {seconds:6.1f} s  {outcome[:150]}", flush=True)
    label = "".join(c if c.isalnum() else "-" for c in args.label)
    write_results(f"bombs-{label}.json", {"rows": [asdict(r) for r in results]})


if __name__ == "__main__":
    main()
