"""A sweep's summary: per optimizer x setting, the runs' validation and test accuracy, and the selected setting.

``summarize`` takes a sweep's runs (config and status, as ``minima.sweeps.cli.collect``
gathers them), groups the seeds of each setting, selects each optimizer's
learning rate by the rule below, says where the grid must be extended, and
writes ``summary.csv`` and ``summary.md`` into the sweep folder. It imports
nothing of the launcher: the launcher depends on this module, not the other way round.

The selection rule (after DeepOBS): among the settings whose every seed finished
and none diverged, the highest mean final-epoch validation accuracy; ties (equal
means, as accuracies are counts of held-out images) go to the lower mean final
validation loss. The test split is never used to choose. When the selected
learning rate is the smallest or the largest tried, the optimum may lie beyond
it: ``extensions`` names the next grid point on that side, one grid step further.
"""

import math
from pathlib import Path

import pandas as pd

from minima.optimizers import names as optimizer_names
from minima.runs import FINAL, StudyError, load_json, run_dir_for, save_csv, save_text

TIE = 1e-9  # mean validation accuracies closer than this are equal (they are multiples of 1/(seeds x held-out))


def _final_validation(run_dir) -> tuple[float, float]:
    """(accuracy, loss) on the held-out samples at the last epoch; NaN when the history has none."""
    path = Path(run_dir) / "history.csv"
    try:
        history = pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError):
        return math.nan, math.nan
    if "val_accuracy" not in history or not len(history):
        return math.nan, math.nan
    last = history.iloc[-1]
    return float(last["val_accuracy"]), float(pd.to_numeric(last.get("val_loss", math.nan), errors="coerce"))


def select(table: pd.DataFrame) -> pd.Series:
    """Whether each row is its optimizer's selected setting (see the module's rule)."""
    chosen = pd.Series(False, index=table.index)
    eligible = table[(table.diverged == 0) & (table.done == table.runs) & table.val_accuracy_mean.notna()]
    for _, g in eligible.groupby("optimizer", sort=False):
        top = g[g.val_accuracy_mean >= g.val_accuracy_mean.max() - TIE]
        chosen[top.val_loss_mean.fillna(math.inf).idxmin()] = True
    return chosen


def _grid_step(lrs) -> float:
    """The grid's spacing as a factor: the ratio of neighbouring learning rates (log-spaced), else sqrt(10)."""
    lrs = sorted(set(lrs))
    return math.exp(sum(math.log(b / a) for a, b in zip(lrs, lrs[1:])) / (len(lrs) - 1)) if len(lrs) > 1 \
        else math.sqrt(10)


def extensions(table: pd.DataFrame) -> dict[str, float]:
    """{optimizer: the next learning rate to try} where the selection sits at an edge of the grid tried.

    Also where every setting finished and none is eligible because all diverged: then one step below the lowest.
    Optimizers with runs still to finish get nothing (their selection may change).
    """
    out = {}
    for opt, g in table.groupby("optimizer", sort=False):
        if (g.done + g.diverged < g.runs).any():
            continue
        lrs, step = sorted(g.lr), _grid_step(g.lr)
        best = g[g.best]
        if len(best) and best.lr.iloc[0] == lrs[-1]:
            out[opt] = float(f"{lrs[-1] * step:.3g}")
        elif len(best) and best.lr.iloc[0] == lrs[0] or not len(best) and (g.diverged > 0).all():
            out[opt] = float(f"{lrs[0] / step:.3g}")
    return out


def summarize(name, root, runs_with_status, echo=True):
    """Per optimizer x setting: runs, mean ± sd validation and test accuracy, and the selected setting.

    The selection follows the module's rule (``select``); where it sits at an
    edge of the grid, the summary names the learning rate to add
    (``extensions``). Writes summary.csv (per setting), runs.csv (per run) and
    summary.md into the sweep folder and returns the per-setting table.
    ``runs_with_status``: (config, status) per planned run.
    """
    records = []
    for cfg, status in runs_with_status:
        run_dir = run_dir_for(cfg)
        final = load_json(run_dir / FINAL) if status == "done" else {}
        val_accuracy, val_loss = _final_validation(run_dir) if status == "done" else (math.nan, math.nan)
        records.append({"optimizer": cfg["optimizer"], "setting": run_dir.parent.name.split("-", 1)[1],
                        "lr": cfg["hyperparameters"]["lr"], "seed": cfg["seed"], "status": status,
                        "test_accuracy": final.get("test_accuracy", math.nan),
                        "val_accuracy": val_accuracy, "val_loss": val_loss})
    runs = pd.DataFrame(records)
    rows = []
    for (opt, setting), g in runs.groupby(["optimizer", "setting"], sort=False):
        ok = g[g.status == "done"]
        rows.append({"optimizer": opt, "setting": setting, "lr": g.lr.iloc[0], "runs": len(g), "done": len(ok),
                     "diverged": int((g.status == "diverged").sum()), "failed": int((g.status == "failed").sum()),
                     "test_accuracy_mean": ok.test_accuracy.mean(), "test_accuracy_sd": ok.test_accuracy.std(),
                     "val_accuracy_mean": ok.val_accuracy.mean(), "val_accuracy_sd": ok.val_accuracy.std(),
                     "val_loss_mean": ok.val_loss.mean()})
    table = pd.DataFrame(rows)
    order = {o: i for i, o in enumerate(optimizer_names(everything=True))}
    table = table.sort_values(["optimizer", "lr", "setting"], key=lambda s: s.map(order) if s.name == "optimizer"
                              else s).reset_index(drop=True)
    table["best"] = select(table)
    save_csv(root / "summary.csv", table.to_dict("records"))
    save_csv(root / "runs.csv", runs.to_dict("records"))
    markdown = _summary_markdown(name, table, runs)
    save_text(root / "summary.md", markdown)
    if echo:
        print(markdown)
        print(f"written: {root / 'summary.md'} and {root / 'summary.csv'}")
    return table


def _mean_sd(mean, sd, n) -> str:
    if n == 0 or math.isnan(mean):
        return "–"
    return f"{mean:.4f}" if n < 2 else f"{mean:.4f} ± {sd:.4f}"


def _summary_markdown(name, table, runs) -> str:
    lines = [f"# Sweep `{name}`", "",
             "Mean ± sd over seeds. Validation accuracy and loss are the final epoch's, on samples held out of the "
             "training split. The selected setting of an optimizer has the highest mean validation accuracy among "
             "the settings whose every seed finished without diverging; a tie goes to the lower mean validation "
             "loss. Test accuracy is reported, never used to choose.", "",
             "| optimizer | setting | lr | runs done | diverged | failed | val accuracy | val loss | test accuracy "
             "| best |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        loss = "–" if math.isnan(r.val_loss_mean) else f"{r.val_loss_mean:.4g}"
        lines.append(f"| {r.optimizer} | {r.setting} | {r.lr:g} | {r.done}/{r.runs} | {r.diverged} | {r.failed} | "
                     f"{_mean_sd(r.val_accuracy_mean, r.val_accuracy_sd, r.done)} | {loss} | "
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
    more = extensions(table)
    if more:
        lines += ["", "**The grid needs extending** (the selection sits at its edge): "
                  + ", ".join(f"{opt} lr {lr:g}" for opt, lr in more.items())
                  + ". `python -m minima sweep launch --extend` adds these points until no selection is at an edge."]
    unfinished = int((~runs.status.isin(["done", "diverged"])).sum())
    if not more and not unfinished:
        lines += ["", "No selection sits at an edge of its grid."]
    if unfinished:
        lines += ["", f"{unfinished} of {len(runs)} runs are not complete; they are left out above."]
    return "\n".join(lines) + "\n"


def selected_learning_rates(root) -> dict[str, float]:
    """{optimizer: selected lr} from a collected sweep's summary.csv (raises StudyError if there is none)."""
    path = Path(root) / "summary.csv"
    if not path.exists():
        raise StudyError(f"{path} does not exist; collect the sweep first: python -m minima sweep collect --name "
                         f"{Path(root).name}")
    table = pd.read_csv(path)
    best = table[table.best.astype(bool)]
    return {r.optimizer: float(r.lr) for r in best.itertuples()}
