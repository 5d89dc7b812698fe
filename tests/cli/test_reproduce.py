"""`python -m pipeline.reproduce <run id>`: a past run retrained from what it logged gives the
same metrics, and says so metric by metric."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import TINY, cli
from git_repo import git, pipeline_repo
from mlflow.tracking import MlflowClient
from models_fixture import Champion


@pytest.mark.slow
def test_reproducing_a_run_gives_identical_metrics(champion: Champion) -> None:
    result = cli("reproduce", champion.run_id, env=champion.env())
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines if line.split() and "identical" in line}
    for metric in ("test_accuracy", "test_loss", "best_val_loss", "loss", "val_accuracy"):
        assert metric in rows
    assert not any(line.split()[0].startswith("seconds.") for line in lines if line.split())
    assert f"reproduces run {champion.run_id} metric for metric" in result.stdout
    client = MlflowClient(champion.store_uri)
    [again] = client.search_runs(
        [client.get_run(champion.run_id).info.experiment_id],
        f"tags.reproduces = '{champion.run_id}'",
    )
    assert again.info.status == "FINISHED"
    assert again.data.tags["kind"] == "reproduction"
    assert again.data.metrics["test_accuracy"] == champion.test_accuracy


@pytest.mark.slow
def test_at_commit_reruns_the_runs_own_code_and_today_names_the_change(
    tmp_path: Path, store_uri: str
) -> None:
    """A run trained with an uncommitted change (an edited module and a new one) records it;
    once the tree is back at its commit, `at_commit=true` re-creates that code in a temporary
    worktree and reproduces the run metric for metric, leaving the tree as it was; today's
    code differs, and `reproduce` says that the uncommitted change is the likely cause."""
    repo = pipeline_repo(tmp_path)
    commit = git(repo, "rev-parse", "HEAD").strip()
    model = repo / "pipeline" / "stages" / "model.py"
    original = model.read_text()
    changed = original.replace("offset=-0.5", "offset=OFFSET").replace(
        "from pipeline.stages.data.dataset import IMAGE_SHAPE",
        "from pipeline.stages.data.dataset import IMAGE_SHAPE\n"
        "from pipeline.stages.offset import OFFSET",
    )
    assert changed != original
    model.write_text(changed)
    (repo / "pipeline" / "stages" / "offset.py").write_text("OFFSET = -0.25\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(repo),  # the copy's `pipeline`, not this checkout's
        "MLFLOW_TRACKING_URI": store_uri,
        "PIPELINE_CACHE_DIR": str(tmp_path / "cache"),
    }

    def pipeline(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, env=env, cwd=repo)

    trained = pipeline(*TINY, "tracking.experiment=e", f"hydra.run.dir={tmp_path / 'out'}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    client = MlflowClient(store_uri)
    [run] = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert run.data.tags["mlflow.source.git.commit"] == commit
    assert run.data.tags["git.patch"] == "recorded"  # by the recorder's helper process
    recorded = {f.path for f in client.list_artifacts(run.info.run_id, "environment")}
    assert recorded == {"environment/environment.json", "environment/uncommitted.patch"}
    model.write_text(original)  # the tree back at its commit
    (repo / "pipeline" / "stages" / "offset.py").unlink()

    ungranted = pipeline("reproduce", run.info.run_id, "at_commit=true")
    assert ungranted.returncode == 2, ungranted.stderr[-3000:]
    [line] = ungranted.stderr.strip().splitlines()[-1:]
    digest = line.rpartition("grant it with patch=")[2]
    assert len(digest) == 12, line
    again = pipeline("reproduce", run.info.run_id, "at_commit=true", f"patch={digest}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Then (the run) and now:" in again.stdout or "Then and now:" in again.stdout
    assert f"reproduces run {run.info.run_id} metric for metric" in again.stdout
    assert "pipeline/stages/model.py, pipeline/stages/offset.py" in again.stderr  # applied
    [rerun] = client.search_runs([run.info.experiment_id], "tags.`reproduces.at_commit` != ''")
    assert rerun.data.tags["reproduces"] == run.info.run_id
    assert rerun.data.tags["reproduces.at_commit"] == commit
    assert rerun.data.tags["mlflow.source.git.commit"] == commit
    assert rerun.data.tags["git.dirty"] == "true"  # the worktree held the change
    assert rerun.data.metrics["test_accuracy"] == run.data.metrics["test_accuracy"]
    assert git(repo, "status", "--porcelain") == ""  # the person's tree untouched
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1

    today = pipeline("reproduce", run.info.run_id)
    assert today.returncode == 3, today.stderr[-3000:]
    said = "uncommitted change: an uncommitted change to pipeline/stages/model.py, "
    assert said in today.stdout
    [line] = today.stderr.strip().splitlines()[-1:]
    assert line.startswith("not identical: ")
    assert line.endswith(
        "likely cause: the uncommitted change differs "
        "(in pipeline/stages/model.py, pipeline/stages/offset.py)"
    )
