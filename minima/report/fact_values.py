"""The numbers behind ``make facts``, computed from a study's frames (``minima.report.collection``) and returned as
plain dicts and lists: no printing, no prose, no run folder read again. ``minima.report.facts`` words them.
"""

import numpy as np

from minima.report import collection


def by_optimizer(frame, column, reduce="mean") -> dict:
    """{optimizer: the column reduced over its rows}."""
    return {opt: getattr(frame[frame.optimizer == opt][column], reduce)() for opt in collection.optimizers_in(frame)}


def accuracy(runs) -> dict:
    """Test accuracy (mean, sd), train accuracy (min) over seeds, and the largest gap between optimizer means."""
    mean, sd = by_optimizer(runs, "test_accuracy"), by_optimizer(runs, "test_accuracy", "std")
    n = {opt: collection.seed_count(runs, opt) for opt in mean}
    best, worst = max(mean, key=mean.get), min(mean, key=mean.get)
    se = np.sqrt(sd[best] ** 2 / n[best] + sd[worst] ** 2 / n[worst])
    return {"mean": mean, "sd": sd, "train_min": by_optimizer(runs, "train_accuracy", "min"), "best": best,
            "worst": worst, "difference": mean[best] - mean[worst], "z": (mean[best] - mean[worst]) / se}


def curvature(runs, frames) -> dict:
    """Final curvature means, residuals, the Hessian-batch sensitivity and PyHessian against the certified pairs."""
    sens = frames["sensitivity"]
    l100 = by_optimizer(sens[sens.batch == "100"], "lambda1")
    lfull = by_optimizer(sens[sens.batch == "full"], "lambda1")
    per_run = sens.groupby(["optimizer", "seed"]).trace.agg(lambda t: t.max() / t.min() - 1)
    means = sens.groupby(["optimizer", "batch"]).trace.mean().groupby("optimizer").agg(lambda t: t.max() / t.min() - 1)
    rel = ((runs.pyhessian_lambda1 - runs.lambda1).abs() / runs.lambda1).tolist()
    rel += ((runs.pyhessian_lambda2 - runs.lambda2).abs() / runs.lambda2).tolist()
    res = runs[["pyhessian_residual1", "pyhessian_residual2"]].to_numpy()
    return {"means": {c: by_optimizer(runs, c) for c in ("lambda1", "lambda2", "trace", "train_loss")},
            "max_residual": runs[["residual1", "residual2"]].to_numpy().max(),
            "batch_ratio": {k: l100[k] / lfull[k] for k in l100}, "full_lambda1": lfull,
            "trace_change_means": means.max(), "trace_change_means_at": means.idxmax(),
            "trace_change_run": per_run.max(), "pyhessian_max_rel": max(rel), "pyhessian_res_min": res.min(),
            "pyhessian_res_max": res.max(), "pyhessian_converged": int(runs.pyhessian_converged.sum()),
            "n_runs": len(runs)}


def spectrum(runs, frames) -> dict:
    spec = frames["spectrum"]
    return {"median_ratio": by_optimizer(runs, "median_ratio"),
            "median_ratio_sd": by_optimizer(runs, "median_ratio", "std"),
            "median_gap": by_optimizer(runs, "median_gap"), "below_1": int((spec.ratio < 1).sum()), "steps": len(spec),
            "unconverged": int((~spec.converged.astype(bool)).sum()), "ratio_min": spec.ratio.min(),
            "ratio_max": spec.ratio.max(),
            "median_hvps": {o: spec[spec.optimizer == o].n_hvps.median() for o in collection.optimizers_in(spec)}}


def sharpness(frames) -> dict:
    """{optimizer: per-seed peak, first and last lambda1 of the sharpness curve}."""
    sh = frames["sharpness"]
    out = {}
    for opt in collection.optimizers_in(sh):
        per_seed = sh[sh.optimizer == opt].groupby("seed").lambda1
        out[opt] = {"peak": per_seed.max(), "first": per_seed.first(), "last": per_seed.last()}
    return out


def peak_accuracy(frames) -> dict:
    """{optimizer: per-seed best test accuracy of any epoch, its first epoch, the final one, test-loss min and end}."""
    hist = collection.only_ok(frames["history"], frames)
    out = {}
    for opt in collection.optimizers_in(hist):
        h = hist[hist.optimizer == opt].sort_values("epoch")
        per_seed = h.groupby("seed")
        out[opt] = {"peak": per_seed.test_accuracy.max(), "final": per_seed.test_accuracy.last(),
                    "at": h.loc[per_seed.test_accuracy.idxmax(), "epoch"],  # the first epoch at the peak
                    "loss_min": per_seed.test_loss.min(), "loss_end": per_seed.test_loss.last()}
    return out


def loss_jumps(frames) -> dict:
    """{optimizer: per-seed lists of the largest rise of the training loss over its lowest so far in the second
    half of training (epoch-end losses), its epoch and value, and the final loss over the lowest}."""
    hist = collection.only_ok(frames["history"], frames)
    out = {}
    for opt in collection.optimizers_in(hist):
        rise, at, to, end = [], [], [], []
        for _, h in hist[hist.optimizer == opt].sort_values("epoch").groupby("seed"):
            loss = h.train_loss.to_numpy()
            start = max(1, len(loss) // 2)  # the first epoch of the second half, with one before it
            if len(loss) <= start:
                continue
            ratio = loss[start:] / np.minimum.accumulate(loss)[start - 1:-1]
            i = start + int(np.argmax(ratio))
            rise.append(loss[i] / loss[:i].min())
            at.append(int(h.epoch.iloc[i]))
            to.append(loss[i])
            end.append(loss[-1] / loss.min())
        if rise:
            out[opt] = {"rise": rise, "at": at, "to": to, "end": end}
    return out


def gradient_norms(frames, last_epochs=10) -> dict:
    hist = frames["history"]
    late = hist[hist.epoch > hist.epoch.max() - last_epochs]
    ratio = late.grad_norm_last_batch / late.grad_norm_full
    return {o: ratio[late.optimizer == o].median() for o in collection.optimizers_in(late)}


def landscapes(runs) -> dict:
    """{optimizer: per-seed loss rise one unit from the minimum along the filter-normalised random direction}."""
    out = {}
    for opt in collection.optimizers_in(runs):
        rises = runs[runs.optimizer == opt].get("random_rise_at_one")
        values = [] if rises is None else [float(v) for v in rises if np.isfinite(v)]
        if values:
            out[opt] = values
    return out


def hardest_digits(frames, k=3) -> dict:
    pc = frames["per_class"]
    return {opt: pc[pc.optimizer == opt].groupby("digit").accuracy.mean().sort_values().head(k)
            for opt in collection.optimizers_in(pc)}


def tracking_cost(frames) -> dict | None:
    """What the trackers add: (steps + trackers) / steps - 1, and against steps plus evaluation; None if untimed."""
    hist = frames["history"]
    if "step_time_s" not in hist or hist.step_time_s.isna().all():
        return None
    timed = hist.dropna(subset=["step_time_s"])
    sums = timed.groupby(["optimizer", "seed"])[["step_time_s", "train_time_s", "epoch_time_s"]].sum()
    added = (sums.train_time_s / sums.step_time_s - 1).groupby("optimizer").median()
    trackers = sums.train_time_s - sums.step_time_s
    whole = trackers / (sums.epoch_time_s - trackers)  # against the run without them: steps and evaluation
    return {"steps": {o: added[o] for o in collection.optimizers_in(timed.reset_index())},
            "with_evaluation": whole.groupby("optimizer").median().to_dict()}


def two_slots(minutes) -> float:
    """The wall time of these jobs on two slots, longest first, each to the slot that frees first."""
    slots = [0.0, 0.0]
    for m in sorted(minutes, reverse=True):
        slots[slots.index(min(slots))] += m
    return max(slots)


def seed_cost(runs) -> dict | None:
    """Median minutes of one run's training plus final analysis per optimizer (landscapes left out), from each
    run's own records; the seed's total and its wall time on two slots. An estimate from measured parts."""
    if not {"epochs_s", "analysis_s"} <= set(runs):
        return None
    timed = runs.dropna(subset=["epochs_s", "analysis_s"])
    if not len(timed):
        return None
    minutes = (timed.epochs_s + timed.analysis_s) / 60
    median = {opt: float(m) for opt, m in minutes.groupby(timed.optimizer, sort=False).median().items()}
    return {"median": median, "total_h": sum(median.values()) / 60, "two_slots_h": two_slots(median.values()) / 60}
