"""The projected-update experiment's tables: losses and spectra against plain SGD, the built-in check, the cost.

Comparisons with plain SGD are paired by seed: within a group the runs of one seed share their weights up
to the switch-on step and draw the same batches, so each seed gives one difference (of logs, for losses and
eigenvalues: a ratio), and the 95 % interval is Student's t over those per-seed differences
(``statistics.paired``). Runs come from ``projected_collection``; the figure is ``projected_figures``.
"""


import numpy as np
import pandas as pd
import torch

import params
from minima.report import fair, statistics
from minima.report.projected_collection import (  # noqa: F401 - collect, has_experiment: the report's entry points
    BASE,
    HALF,
    _group,
    _settings,
    _weights,
    collect,
    has_experiment,
)
from minima.report.projected_figures import plot_projected  # noqa: F401 - re-exported beside the tables
from minima.report.tables import mean_sd


def _last(r, column):
    h = r["history"]
    return float(h[column].iloc[-1]) if len(h) else np.nan


def _at_switch_on(r, start):
    """The full-batch training loss at the last epoch end at or before step ``start``."""
    h = r["history"]
    before = h[h.step <= start]
    return float(before.train_loss.iloc[-1]) if len(before) else np.nan


# ---------------------------------------------------------------- the tables

def _paired_text(a, b, log, spec):
    p = statistics.paired(a, b, log)
    null = 1.0 if log else 0.0
    return fair.interval_text(p["estimate"], p["low"], p["high"], spec), fair.supported(p["low"], p["high"], null)


def loss_table(found, group) -> pd.DataFrame:
    """Per setting: final training loss (its ratio to plain SGD's), test accuracy (its difference), paired by seed."""
    members = _group(found, group)
    base = {r["seed"]: r for r in members if r["setting"] == BASE}
    start = max((r["start_step"] for r in members), default=0)  # plain SGD's loss where the others switch on
    rows = []
    for setting in _settings(members):
        rs = {r["seed"]: r for r in members if r["setting"] == setting}
        loss = {s: _last(r, "train_loss") for s, r in rs.items()}
        acc = {s: _last(r, "test_accuracy") for s, r in rs.items()}
        row = {"setting": setting, "seeds": len(rs), "diverged": sum(r["status"] != "ok" for r in rs.values()),
               "train loss": mean_sd(list(loss.values()), significant=3),
               "loss end / switch-on": mean_sd([_last(r, "train_loss") / _at_switch_on(r, start) for r in rs.values()],
                                               significant=3),
               "test accuracy": mean_sd(list(acc.values()))}
        if setting != BASE:
            row["loss vs SGD (ratio, 95 % CI)"], row["loss supported"] = _paired_text(
                loss, {s: _last(r, "train_loss") for s, r in base.items()}, True, ".3g")
            row["accuracy vs SGD (diff, 95 % CI)"], row["accuracy supported"] = _paired_text(
                acc, {s: _last(r, "test_accuracy") for s, r in base.items()}, False, ".4f")
        rows.append(row)
    return pd.DataFrame(rows).fillna("—")


def spectrum_table(found) -> pd.DataFrame:
    """The final regime: λ1 and λ1/λ2 over the last steps, and λ1 at the lowest threshold all its runs reach."""
    members = _group(found, "final")
    reached = [set(r["equal_loss"].loss_threshold) if r["equal_loss"] is not None else set() for r in members]
    common = min(set.intersection(*reached)) if reached and set.intersection(*reached) else None
    base = {r["seed"]: r for r in members if r["setting"] == BASE}

    def lam1(r):
        return float(r["spectrum"].lambda1.mean()) if r["spectrum"] is not None and len(r["spectrum"]) else np.nan

    def at_threshold(r):
        e = r["equal_loss"]
        return float(e[e.loss_threshold == common].lambda1.iloc[0]) if common is not None else np.nan

    rows = []
    for setting in _settings(members):
        rs = [r for r in members if r["setting"] == setting]
        versus, backed = _paired_text({r["seed"]: lam1(r) for r in rs}, {s: lam1(r) for s, r in base.items()},
                                      True, ".3g")
        ratios = [float((r["spectrum"].lambda1 / r["spectrum"].lambda2).median()) if r["spectrum"] is not None
                  else np.nan for r in rs]
        row = {"setting": setting, "λ1, last steps": mean_sd([lam1(r) for r in rs], significant=3),
               "vs SGD (ratio, 95 % CI)": "—" if setting == BASE else versus,
               "supported": "—" if setting == BASE else backed,
               "median λ1/λ2": mean_sd(ratios, significant=3)}
        if common is not None:
            crossed = [int(r["equal_loss"].set_index("loss_threshold").loc[common, "epoch"]) for r in rs]
            row[f"λ1 at train loss {common:g}"] = mean_sd([at_threshold(r) for r in rs], significant=3)
            row["epoch reached"] = mean_sd(crossed, decimals=0)
        rows.append(row)
    return pd.DataFrame(rows)


def check_table(found) -> pd.DataFrame:
    """Per seed: λ = 0.5 from step 0 against SGD at half the lr — the largest weight and loss differences."""
    members = _group(found, "check")
    rows = []
    for seed in sorted({r["seed"] for r in members}):
        pair = {r["setting"]: r for r in members if r["seed"] == seed}
        half = next((r for s, r in pair.items() if s.startswith("λ=0.5")), None)
        if half is None or HALF not in pair:
            continue
        a, b = _weights(half["run_dir"]), _weights(pair[HALF]["run_dir"])
        dw = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
        ha, hb = half["history"], pair[HALF]["history"]
        rows.append({"seed": seed, "epochs": int(ha.epoch.max()),
                     "identical weights": all(torch.equal(a[k], b[k]) for k in a), "max |Δw|": f"{dw:.1e}",
                     "max |Δ train loss|": f"{float((ha.train_loss - hb.train_loss).abs().max()):.1e}",
                     "final train loss": f"{float(ha.train_loss.iloc[-1]):.4g}"})
    return pd.DataFrame(rows)


def cost_rows(found) -> pd.DataFrame:
    """Per projected run: HVPs per refresh and per projected step, and its step time against plain SGD's."""
    base_step = {}
    for r in found:   # each group's plain SGD: the check's is SGD at half the lr
        if r["setting"] == (HALF if r["group"] == "check" else BASE):
            base_step[(r["group"], r["seed"])] = _step_seconds(r)
    rows = []
    for r in found:
        p = r["projection"]
        if r["optimizer"] != "projected" or p is None or not len(p):
            continue
        projected_steps = len(r["history"]) * _per_epoch(r) - r["start_step"]
        base = base_step.get(("early" if r["group"] == "refresh" else r["group"], r["seed"]), np.nan)
        rows.append(dict(group=r["group"], setting=r["setting"], seed=r["seed"], R=int(r["refresh_every"]),
                         refreshes=len(p), hvps_per_refresh=float(p.n_hvps.mean()),
                         hvps_per_step=float(p.n_hvps.sum()) / max(1, projected_steps),
                         cpu_s_per_refresh=float(p.cpu_s.mean()), certified=float(p.converged.astype(bool).mean()),
                         grad_share=float(p.grad_share.mean()) if "grad_share" in p else np.nan,
                         step_s=_step_seconds(r), step_ratio=_step_seconds(r) / base))
    return pd.DataFrame(rows)


def _per_epoch(r):
    h = r["history"]
    return int(h.step.iloc[0]) if len(h) else 0


def _step_seconds(r):
    """Seconds per optimizer step in the epochs after the switch-on (refreshes included): step_time_s / steps."""
    h = r["history"]
    if "step_time_s" not in h or not len(h):
        return np.nan
    after = h[h.step > r["start_step"] + _per_epoch(r) - 1]
    return float(after.step_time_s.sum()) / (len(after) * _per_epoch(r)) if len(after) else np.nan


def cost_table(found) -> pd.DataFrame:
    """Per refresh interval R: HVPs per refresh and per step, CPU seconds per refresh, step time against SGD."""
    c = cost_rows(found)
    if not len(c):
        return pd.DataFrame()
    c = c[c.group.isin(["early", "refresh"])] if c.group.isin(["early", "refresh"]).any() else c
    rows = []
    for r_value, g in c.groupby("R"):
        rows.append({"R": int(r_value), "runs": len(g), "HVPs per refresh": mean_sd(g.hvps_per_refresh, 1),
                     "HVPs per step": mean_sd(g.hvps_per_step, significant=3),
                     "CPU s per refresh": mean_sd(g.cpu_s_per_refresh, 2),
                     "certified": f"{g.certified.mean():.0%}",
                     "gradient share in V": mean_sd(g.grad_share, 3),
                     "step time / SGD's, median (range)": _median_range(g.step_ratio)})
    return pd.DataFrame(rows)


def _median_range(values) -> str:
    """Median and range: wall times of runs that shared the cores with other work are skewed, not spread."""
    v = pd.Series(values, dtype=float).dropna()
    return "—" if not len(v) else f"{v.median():.3g} ({v.min():.3g}–{v.max():.3g})"


def refresh_table(found) -> pd.DataFrame:
    """The early regime's final training loss for each λ of the refresh group at every R, seed by seed."""
    lams = {r["lam"] for r in _group(found, "refresh")}
    rows = []
    for r in found:
        if r["optimizer"] == "projected" and r["lam"] in lams and r["group"] in ("early", "refresh") and \
                r["seed"] in {x["seed"] for x in _group(found, "refresh")}:
            rows.append({"λ": f"{r['lam']:g}", "R": int(r["refresh_every"]), "seed": r["seed"],
                         "final train loss": f"{_last(r, 'train_loss'):.4g}",
                         "test accuracy": f"{_last(r, 'test_accuracy'):.4f}"})
    return pd.DataFrame(rows).sort_values(["λ", "seed", "R"]).reset_index(drop=True) if rows else pd.DataFrame()


def tables(found) -> dict:
    """{name: (table, caption)} for every table the runs support."""
    out = {}
    if _group(found, "check"):
        out["projected_check"] = (check_table(found), "λ = 0.5 switched on at step 0 against plain SGD at half the "
                                  "learning rate: they must end with the same weights.")
    final_share = f"switched on for the last {params.PROJECTED_FINAL_SHARE:.0%} of training"
    for group, when in (("early", "switched on after one epoch"), ("final", final_share)):
        if _group(found, group):
            out[f"projected_{group}"] = (loss_table(found, group), f"The {group} regime ({when}): full-batch "
                                         "training "
                                         "loss and test accuracy at the end, mean ± sd over seeds, against plain SGD "
                                         "from the same weights (95 % t intervals of the per-seed ratios and "
                                         "differences; "
                                         "a loss ratio below 1 is lower).")
    if _group(found, "final"):
        out["projected_spectrum"] = (spectrum_table(found), "The final regime's curvature: λ1 over the last steps "
                                     "(mean of the tracked steps), the median λ1/λ2, and λ1 when the training loss "
                                     "first fell below the lowest threshold every run reached.")
    cost = cost_table(found)
    if len(cost):
        out["projected_cost"] = (cost, "What the projected update costs, by refresh interval R (early and refresh "
                                 "groups): HVPs of the certified top-10 solver, CPU seconds per refresh, and the step "
                                 "time (refreshes included) over plain SGD's of the same group and seed, a median "
                                 "because runs that shared the cores with other work skew it.")
    if _group(found, "refresh"):
        out["projected_refresh"] = (refresh_table(found), "Whether the result depends on R: the early regime's "
                                    "final training loss at every refresh interval.")
    return out
