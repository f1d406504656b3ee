"""Does flatness predict generalization? The flatness study's scores, from ``<results>/measures/measures.csv``.

Jiang et al. 2020's protocol on the measured minima (``minima.measures_study``):
- Kendall's tau between each measure and the generalization gap (test error − train error, and test loss − train
  loss) over a population of models, with a paired bootstrap interval over models (``statistics.kendall_tau``);
- Psi, the granulated tau: for each hyperparameter axis the mean tau over the groups in which only that axis varies,
  and their mean (``statistics.granulated_tau``), on the flatness grid (optimizer × learning-rate step × batch size ×
  seed). The learning-rate axis is the step on each optimizer's grid (−1, 0, +1 around the sweep's selection), so
  that "only the optimizer varies" compares each optimizer at its own comparable rate;
- tau within each optimizer;
- the fingerprints at equal loss: which optimizer has the lowest tr(H), tr(Diag(H)^1/2) and lambda1 at the 0.01
  stopping point, paired with SGD on (batch size, learning-rate step, seed).
Every measure is oriented as measured ("larger = sharper" for the curvature measures); a measure predicts the gap
when tau > 0, except the margin, for which the field expects tau < 0.
"""

from pathlib import Path

import numpy as np
import pandas as pd

import params
from minima import optimizers, schema
from minima.report import statistics

MEASURES = {  # column -> label, in the order the tables list them
    "lambda1": "λ1", "trace": "tr(H)", "sqrt_diag_trace": "tr(Diag(H)^½)",
    "adaptive_worst": "adaptive worst-case", "adaptive_average": "adaptive average-case",
    "pac_bayes_flatness": "PAC-Bayes 1/σ²", "random_direction": "random-direction sharpness",
    "weight_norm": "‖w‖₂", "distance_from_init": "‖w − w₀‖₂", "margin": "output margin",
}
STOP_POPULATION = "flatness, at 0.01"
GAPS = {"gap_error": "test − train error", "gap_loss": "test − train loss"}
AXES = ("optimizer", "lr_step", "batch_size", "seed")
FINGERPRINTS = {"trace": "SGD", "sqrt_diag_trace": "Adam", "lambda1": "SAM"}  # whom theory says lowers each
PREDICTED_BY = {"trace": "Li, Wen and Lyu 2025", "sqrt_diag_trace": "Li, Wen and Lyu 2025",
                "lambda1": "Wen, Ma and Li 2023, for full-batch SAM"}
LABELS = optimizers.labels()


def measures_path(results_dir) -> Path:
    return Path(results_dir) / "measures" / schema.MEASURES_FILE


def has_measures(results_dir) -> bool:
    return measures_path(results_dir).exists()


def load(results_dir) -> pd.DataFrame:
    """The measured rows, checked against ``schema.MEASURES``, with the learning-rate step of each flatness run."""
    table = pd.read_csv(measures_path(results_dir))
    schema.MEASURES.check(table.columns, where=str(measures_path(results_dir)))
    table["population"] = np.where(table.run.str.startswith("flatness/"), "flatness", table.experiment)
    flat = table.population == "flatness"
    table["lr_step"] = np.nan
    for _, rows in table[flat].groupby("optimizer"):
        grid = sorted(rows.lr.unique())
        middle = grid[len(grid) // 2]
        table.loc[rows.index, "lr_step"] = [grid.index(v) - grid.index(middle) for v in rows.lr]
    return table


def populations(table) -> dict:
    """name -> (rows, what they are): the flatness grid at its stop and final weights, every embedded model at its
    final weights, and the full-size (another dataset) models. Final weights count only where their training CE is
    at most ``params.STOP_LOSS``: Jiang et al. compare networks that fit their training set to the same loss, and a
    run that collapsed to chance has no minimum to score."""
    flat = table.population == "flatness"
    embedded = table.dataset == "mnist"
    final = (table.stop == "final") & (table.train_loss <= params.STOP_LOSS)
    return {
        STOP_POPULATION: (table[flat & (table.stop == "stop")],
                              "the flatness grid's runs at their first epoch end with training CE < 0.01"),
        "flatness, final": (table[flat & final], "the same runs at their final weights"),
        "every embedded model, final": (table[embedded & final],
                                        "study, tuned, sweep, projected-update and flatness runs, final weights"),
        "full size, final": (table[~embedded & final], "the Fashion-MNIST runs (another dataset)"),
    }


def scores(table, n_resamples=2000) -> pd.DataFrame:
    """Every score, one row each (``schema.SCORES``): tau of each measure with each gap in each population; Psi per
    axis and overall on the flatness grid at its stop; tau within each optimizer there. ``make measures`` saves it
    as ``<results>/measures/scores.csv``; the report's tables are drawn from it."""
    rows = []

    def add(statistic, population, gap, measure, group, entry, key, n):
        rows.append({"statistic": statistic, "population": population, "gap": gap, "measure": measure,
                     "group": group, "value": entry[key], "low": entry["low"], "high": entry["high"], "n": n})

    pops = populations(table)
    stop, _ = pops[STOP_POPULATION]
    for column in MEASURES:
        for gap in GAPS:
            for name, (members, _) in pops.items():
                if len(members) >= 3:
                    add("tau", name, gap, column, "all", statistics.kendall_tau(
                        members[column], members[gap], n_resamples=n_resamples), "tau", len(members))
            if stop.optimizer.nunique() < 2:
                continue
            psi = statistics.granulated_tau(stop, column, gap, list(AXES), n_resamples=n_resamples)
            for axis in (*AXES, "overall"):
                add("psi", STOP_POPULATION, gap, column, axis, psi[axis], "psi",
                    psi[axis].get("groups", psi[axis].get("axes")))
            for opt, group in stop.groupby("optimizer", sort=False):
                add("tau_within", STOP_POPULATION, gap, column, opt, statistics.kendall_tau(
                    group[column], group[gap], n_resamples=n_resamples), "tau", len(group))
    return pd.DataFrame(schema.SCORES.written(rows), columns=list(schema.SCORES.fields))


def write_scores(results_dir, n_resamples=2000) -> Path:
    """``<results>/measures/scores.csv`` from the measured rows."""
    from minima import runs

    path = Path(results_dir) / "measures" / schema.SCORES_FILE
    runs.save_csv(path, scores(load(results_dir), n_resamples).to_dict("records"))
    return path


def _interval(value, low, high) -> str:
    if not np.isfinite(value):
        return "–"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:+.2f}"
    return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def _pick(found, statistic, **where) -> pd.DataFrame:
    keep = found.statistic == statistic
    for k, v in where.items():
        keep &= found[k] == v
    return found[keep]


def tau_table(found) -> tuple[pd.DataFrame, str]:
    """tau of every measure with both gaps, for each population (columns), with 95 % bootstrap intervals."""
    taus = _pick(found, "tau")
    pops = list(dict.fromkeys(taus.population))
    rows = []
    for column, label in MEASURES.items():
        row = {"measure": label}
        for name in pops:
            for gap in GAPS:
                e = _pick(taus, "tau", population=name, gap=gap, measure=column).iloc[0]
                row[f"{name}: τ, {GAPS[gap]}"] = _interval(e.value, e.low, e.high)
        rows.append(row)
    sizes = "; ".join(f"{name}: {int(taus[taus.population == name].n.iloc[0])} models" for name in pops)
    caption = (f"Kendall's τ between each measure and the generalization gap, with 95 % paired bootstrap intervals "
               f"over models ({sizes}; final weights only where the training CE is at most {params.STOP_LOSS:g}). "
               f"τ > 0: the sharper (or larger) the measure, the larger the gap.")
    return pd.DataFrame(rows), caption


def _by_group(scores, groups, column_name) -> pd.DataFrame:
    """One row per measure, one column per group (named by ``column_name(group)``): the score with its interval."""
    out = []
    for column, label in MEASURES.items():
        mine = scores[scores.measure == column].set_index("group")
        out.append({"measure": label, **{column_name(g): _interval(*mine.loc[g, ["value", "low", "high"]])
                                         for g in groups}})
    return pd.DataFrame(out)


def psi_table(found, gap="gap_error") -> tuple[pd.DataFrame, str]:
    """Psi per axis and overall, on the flatness grid at its 0.01 stop."""
    psi = _pick(found, "psi", gap=gap)
    out = _by_group(psi, (*AXES, "overall"), lambda axis: f"Ψ {axis.replace('_', ' ')}")
    counts = ", ".join(f"{axis.replace('_', ' ')} {int(psi[psi.group == axis].n.iloc[0])}" for axis in AXES)
    size = int(_pick(found, "tau", population=STOP_POPULATION).n.iloc[0])
    caption = (f"Jiang et al.'s granulated τ (Ψ) with the gap {GAPS[gap]}, on the flatness grid at its 0.01 stop "
               f"({size} models): for each axis the mean τ over the groups in which only it varies (groups: "
               f"{counts}), and the mean over axes; 95 % bootstrap intervals over groups.")
    return out, caption


def within_table(found, gap="gap_error") -> tuple[pd.DataFrame, str]:
    """tau within each optimizer, on the flatness grid at its 0.01 stop."""
    within = _pick(found, "tau_within", gap=gap)
    opts = list(dict.fromkeys(within.group))
    out = _by_group(within, opts, lambda o: LABELS.get(o, o))
    sizes = ", ".join(f"{LABELS.get(o, o)} {int(within[within.group == o].n.iloc[0])}" for o in opts)
    caption = (f"τ with the gap {GAPS[gap]} within each optimizer (learning rate, batch size and seed vary), on the "
               f"flatness grid at its 0.01 stop ({sizes} models); 95 % bootstrap intervals.")
    return out, caption


def fingerprints(table) -> dict:
    """{measure: {optimizer: {"mean", "low", "high", "ratio", "ratio_low", "ratio_high", "n"}}} at the 0.01 stop:
    the geometric mean with its t interval, and the paired ratio to SGD on (batch size, lr step, seed)."""
    rows_, _ = populations(table)[STOP_POPULATION]
    key = lambda r: (r.batch_size, r.lr_step, r.seed)  # noqa: E731
    out = {}
    for column in FINGERPRINTS:
        base = {key(r): getattr(r, column) for r in rows_[rows_.optimizer == "sgd"].itertuples()}
        out[column] = {}
        for opt, group in rows_.groupby("optimizer", sort=False):
            mean, low, high = statistics.mean_interval(group[column], log=True)
            mine = {key(r): getattr(r, column) for r in group.itertuples()}
            pair = statistics.paired(mine, base, log=True)
            out[column][opt] = {"mean": mean, "low": low, "high": high, "ratio": pair["estimate"],
                                "ratio_low": pair["low"], "ratio_high": pair["high"], "n": len(group),
                                "pairs": pair["n"]}
    return out


def fingerprint_table(table) -> tuple[pd.DataFrame, str]:
    found = fingerprints(table)
    rows = []
    for column, per in found.items():
        lowest = min(per, key=lambda o: per[o]["mean"])
        for opt, e in per.items():
            rows.append({"quantity": MEASURES[column], "optimizer": LABELS.get(opt, opt), "models": e["n"],
                         "geometric mean [95 % CI]": f"{e['mean']:.4g} [{e['low']:.4g}, {e['high']:.4g}]",
                         "÷ SGD, paired [95 % CI]": "1" if opt == "sgd" else
                         f"{e['ratio']:.3g} [{e['ratio_low']:.3g}, {e['ratio_high']:.3g}] ({e['pairs']} pairs)",
                         "lowest": "yes" if opt == lowest else "",
                         "theory's lowest": FINGERPRINTS[column] if opt == lowest else ""})
    caption = ("The fingerprints at equal loss: at the 0.01 stop, each optimizer's geometric mean over its flatness "
               "runs, and its ratio to SGD paired on (batch size, learning-rate step, seed), with t intervals. "
               "Theory predicts the lowest: " + "; ".join(f"{MEASURES[c]} — {FINGERPRINTS[c]} ({PREDICTED_BY[c]})"
                                                         for c in FINGERPRINTS) + ". Our SAM is mini-batch.")
    return pd.DataFrame(rows), caption


def unreached_table(results_dir) -> tuple[pd.DataFrame, str]:
    """Every flatness run that never reached the stopping loss: listed, not dropped."""
    from minima import runs

    rows = []
    root = Path(results_dir)
    for stop in sorted((root / "flatness").glob(f"bs*/*/seed*/{schema.STOP_FILE}")):
        at = runs.load_json(stop)
        if at["reached"] or not runs.is_done(stop.parent):
            continue
        final = runs.load_json(stop.parent / schema.FINAL_FILE)
        rows.append({"run": stop.parent.relative_to(root / "flatness").as_posix(),
                     "final training loss": "–" if final["train_loss"] is None else f"{final['train_loss']:.3g}",
                     "final test accuracy": "–" if final["test_accuracy"] is None else
                     f"{final['test_accuracy']:.3f}"})
    caption = (f"Flatness runs that never reached training CE < {params.STOP_LOSS:g} within the epoch budget: they "
               f"have no equal-loss row, and their final weights are measured but scored only where their training "
               f"CE is at most {params.STOP_LOSS:g}.")
    return pd.DataFrame(rows, columns=["run", "final training loss", "final test accuracy"]), caption


def rho_check(results_dir):
    """The radius check's rows (``measures --rho-check``), checked against its schema; None before it is run."""
    path = Path(results_dir) / "measures" / schema.RHO_CHECK_FILE
    if not path.exists():
        return None
    check = pd.read_csv(path)
    schema.RHO_CHECK.check(check.columns, where=str(path))
    return check


def rho_table(check) -> tuple[pd.DataFrame, str]:
    """The sensitivity check behind the adaptive radii, one row per radius (the study's seed-0 models)."""
    rows = []
    for rho, group in check.groupby("rho"):
        order = group.sort_values("worst", ascending=False).optimizer.map(lambda o: LABELS.get(o, o))
        rows.append({"ρ": f"{rho:g}",
                     "worst case, range": f"{group.worst.min():.2g} – {group.worst.max():.2g}",
                     "worst ÷ its float32 rounding, min": f"{(group.worst / group.worst_rounding).min():.2g}",
                     "worst-case order": " > ".join(order),
                     "average case ÷ its SE, min": f"{(group.average / group.average_se).min():.2g}"})
    caption = ("The adaptive radius ρ: on each study optimizer's seed-0 model, the worst-case increase (range over "
               "models), how far above float32 rounding it is resolved (its float64 recomputation's difference), "
               "the optimizers' order, and the average case's mean over its Monte Carlo standard error.")
    return pd.DataFrame(rows), caption


def tables(results_dir) -> dict:
    """stem -> (table, caption) for every flatness table; empty without measured rows."""
    if not has_measures(results_dir):
        return {}
    table = load(results_dir)
    path = Path(results_dir) / "measures" / schema.SCORES_FILE
    found = pd.read_csv(path) if path.exists() else scores(table)
    out = {"flatness_tau": tau_table(found), "flatness_unreached": unreached_table(results_dir)}
    if (found.statistic == "psi").any():
        out.update(flatness_psi=psi_table(found), flatness_within=within_table(found),
                   flatness_fingerprints=fingerprint_table(table))
    check = rho_check(results_dir)
    if check is not None:
        out["flatness_rho"] = rho_table(check)
    return out
