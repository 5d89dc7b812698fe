"""`notmnist report run_id=<sweep parent> | experiment=<name> [out=...]`: compare runs in one
report (a sweep logs the same onto its parent run when it ends)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config.schema import ReportConfig, from_args
from pipeline.errors import ConfigError


def run(args: list[str]) -> int:
    settings = from_args(ReportConfig, args)
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipeline.reporting.comparison import compare, find_runs
    from pipeline.reporting.figures import comparison_figures
    from pipeline.reporting.render import data_uri, html, markdown, report_title
    from pipeline.tracking.store.connect import reach

    uri = reach(settings.tracking_uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    if settings.run_id:
        try:
            parent = client.get_run(settings.run_id)
        except mlflow.exceptions.MlflowException:
            raise ConfigError(f"run_id={settings.run_id}: no such run in {uri}") from None
        experiment_ids, name = [parent.info.experiment_id], f"{parent.info.run_name}"
        which = settings.run_id
    else:
        assert settings.experiment is not None
        experiment = client.get_experiment_by_name(settings.experiment)
        if experiment is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ConfigError(
                f"experiment={settings.experiment}: no such experiment in {uri} (it has "
                f"{', '.join(names) or 'none'}; a lesson's experiment appears once "
                f"`notmnist -m experiment={settings.experiment}` has run)"
            )
        experiment_ids, name = [experiment.experiment_id], f"experiment {settings.experiment}"
        which = settings.experiment
    runs = find_runs(experiment_ids, settings.run_id)
    if runs.empty:
        raise ConfigError(f"no runs to compare for {which} in {uri}")
    comparison = compare(runs, client)
    images = {name: data_uri(fig) for name, fig in comparison_figures(comparison).items()}
    out = Path(settings.out) if settings.out else Path("reports") / f"{which}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = html if out.suffix.lower() in (".html", ".htm") else markdown
    out.write_text(writer(comparison, images, report_title(name, comparison)))
    print(f"{len(comparison.table)} runs compared; report written to {out}")
    return 0
