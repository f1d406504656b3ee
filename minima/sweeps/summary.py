"""A sweep's summary: per optimizer x setting, the runs' test and validation accuracy, and the best setting.

``summarize`` takes a sweep's runs (config and status, as ``minima.sweeps.cli.collect``
gathers them), groups the seeds of each setting, picks each optimizer's best
setting on mean final-epoch validation accuracy, and writes ``summary.csv``
and ``summary.md`` into the sweep folder. It imports nothing of the launcher:
the launcher depends on this module, not the other way round.
"""

import math
from pathlib import Path

import pandas as pd

from minima.optimizers import names as optimizer_names
from minima.runs import FINAL, load_json, run_dir_for, save_csv, save_text


def _final_val_accuracy(run_dir) -> float:
    path = Path(run_dir) / "history.csv"
    try:
        history = pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError):
        return math.nan
    return float(history["val_accuracy"].iloc[-1]) if "val_accuracy" in history and len(history) else math.nan


def summarize(name, root, runs_with_status):
    """Per optimizer x setting: runs, mean ± sd test accuracy and final-epoch validation accuracy, and the best.

    The best setting of an optimizer has the highest mean over seeds of the
    final-epoch validation accuracy; a setting where any seed diverged is not
    eligible. Writes summary.csv and summary.md into the sweep folder and
    returns the table (a DataFrame). ``runs_with_status``: (config, status) per planned run.
    """
    records = []
    for cfg, status in runs_with_status:
        run_dir = run_dir_for(cfg)
        final = load_json(run_dir / FINAL) if status == "done" else {}
        records.append({"optimizer": cfg["optimizer"], "setting": run_dir.parent.name.split("-", 1)[1],
                        "lr": cfg["hyperparameters"]["lr"], "status": status,
                        "test_accuracy": final.get("test_accuracy", math.nan),
                        "val_accuracy": _final_val_accuracy(run_dir) if status == "done" else math.nan})
    runs = pd.DataFrame(records)
    rows = []
    for (opt, setting), g in runs.groupby(["optimizer", "setting"], sort=False):
        ok = g[g.status == "done"]
        rows.append({"optimizer": opt, "setting": setting, "lr": g.lr.iloc[0], "runs": len(g), "done": len(ok),
                     "diverged": int((g.status == "diverged").sum()), "failed": int((g.status == "failed").sum()),
                     "test_accuracy_mean": ok.test_accuracy.mean(), "test_accuracy_sd": ok.test_accuracy.std(),
                     "val_accuracy_mean": ok.val_accuracy.mean(), "val_accuracy_sd": ok.val_accuracy.std()})
    table = pd.DataFrame(rows)
    order = {o: i for i, o in enumerate(optimizer_names(everything=True))}
    table = table.sort_values(["optimizer", "lr", "setting"], key=lambda s: s.map(order) if s.name == "optimizer"
                              else s).reset_index(drop=True)
    eligible = table[(table.diverged == 0) & table.val_accuracy_mean.notna()]
    best = eligible.loc[eligible.groupby("optimizer").val_accuracy_mean.idxmax()] if len(eligible) else eligible
    table["best"] = table.index.isin(best.index)
    save_csv(root / "summary.csv", table.to_dict("records"))
    markdown = _summary_markdown(name, table, runs)
    save_text(root / "summary.md", markdown)
    print(markdown)
    print(f"written: {root / 'summary.md'} and {root / 'summary.csv'}")
    return table


def _mean_sd(mean, sd, n) -> str:
    if n == 0 or math.isnan(mean):
        return "–"
    return f"{mean:.4f}" if n < 2 else f"{mean:.4f} ± {sd:.4f}"


def _summary_markdown(name, table, runs) -> str:
    lines = [f"# Sweep `{name}`", "",
             "Mean ± sd over seeds. Validation accuracy is the final epoch's, on samples held out of the training "
             "split; the best setting per optimizer has the highest mean validation accuracy (settings where a seed "
             "diverged are not eligible). Test accuracy is reported, never used to choose.", "",
             "| optimizer | setting | lr | runs done | diverged | failed | val accuracy | test accuracy | best |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.optimizer} | {r.setting} | {r.lr:g} | {r.done}/{r.runs} | {r.diverged} | {r.failed} | "
                     f"{_mean_sd(r.val_accuracy_mean, r.val_accuracy_sd, r.done)} | "
                     f"{_mean_sd(r.test_accuracy_mean, r.test_accuracy_sd, r.done)} | {'**best**' if r.best else ''} |")
    lines += ["", "## Best learning rate per optimizer", "",
              "| optimizer | lr | setting | val accuracy | test accuracy |", "|---|---|---|---|---|"]
    for opt in dict.fromkeys(table.optimizer):
        b = table[(table.optimizer == opt) & table.best]
        if len(b):
            r = b.iloc[0]
            lines.append(f"| {opt} | {r.lr:g} | {r.setting} "
                         f"| {_mean_sd(r.val_accuracy_mean, r.val_accuracy_sd, r.done)} "
                         f"| {_mean_sd(r.test_accuracy_mean, r.test_accuracy_sd, r.done)} |")
        else:
            lines.append(f"| {opt} | – | – | no eligible setting yet | – |")
    unfinished = int((~runs.status.isin(["done", "diverged"])).sum())
    if unfinished:
        lines += ["", f"{unfinished} of {len(runs)} runs are not complete; they are left out above."]
    return "\n".join(lines) + "\n"
