"""Every interval the report prints, from scipy's t tests: Welch's for two groups, the paired one over seeds, and
the one-sample interval of a mean; on the log scale for ratios and geometric means.

Each returns NaN bounds where there is no interval (fewer than two values), and an exact one where every value
agrees (scipy's interval is then undefined: a zero standard error).
"""

import math
import warnings

import numpy as np
from scipy import stats

LEVEL = 0.95  # every interval's confidence level


def _finite(values) -> np.ndarray:
    v = np.asarray(values, float)
    return v[np.isfinite(v)]


def welch(a, b, level=LEVEL) -> dict:
    """Mean(a) − mean(b) with its Welch t interval (``scipy.stats.ttest_ind(equal_var=False)``)."""
    a, b = _finite(a), _finite(b)
    out = {"diff": a.mean() - b.mean() if len(a) and len(b) else math.nan, "low": math.nan, "high": math.nan,
           "df": math.nan, "n_a": len(a), "n_b": len(b)}
    if len(a) < 2 or len(b) < 2:
        return out
    if a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b) == 0:  # identical values in both groups: the difference is exact
        return dict(out, low=out["diff"], high=out["diff"], df=math.inf)
    test = stats.ttest_ind(a, b, equal_var=False)
    ci = test.confidence_interval(level)
    return dict(out, low=float(ci.low), high=float(ci.high), df=float(test.df))


def ratio(a, b, level=LEVEL) -> dict:
    """Geometric mean(a) / geometric mean(b) with the Welch interval of the log difference; positive values only."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    w = welch(np.log(a[a > 0]), np.log(b[b > 0]), level)
    return {"ratio": _exp(w["diff"]), "low": _exp(w["low"]), "high": _exp(w["high"]), "n_a": w["n_a"],
            "n_b": w["n_b"]}


def paired(a: dict, b: dict, log=False, level=LEVEL) -> dict:
    """Mean over the seeds in both of a[seed] − b[seed] (of logs, exponentiated, when ``log``), with its paired
    t interval (``scipy.stats.ttest_rel``)."""
    seeds = sorted(set(a) & set(b))
    pairs = [(a[s], b[s]) for s in seeds if np.isfinite(a[s]) and np.isfinite(b[s])
             and (not log or (a[s] > 0 and b[s] > 0))]
    x = np.array([math.log(p) if log else p for p, _ in pairs])
    y = np.array([math.log(q) if log else q for _, q in pairs])
    d = x - y
    out = dict(estimate=float(d.mean()) if len(d) else math.nan, low=math.nan, high=math.nan, n=len(d))
    if len(d) >= 2:
        if d.std(ddof=1) == 0:
            out.update(low=out["estimate"], high=out["estimate"])
        else:
            ci = stats.ttest_rel(x, y).confidence_interval(level)
            out.update(low=float(ci.low), high=float(ci.high))
    if log:
        out.update({k: _exp(out[k]) for k in ("estimate", "low", "high")})
    return out


def mean_interval(values, log=False, level=LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of the mean (``scipy.stats.ttest_1samp``); with ``log``, of the mean log,
    exponentiated (a geometric mean). One value: its own, as a zero-width interval."""
    v = _finite(values)
    if log:
        v = np.log(v[v > 0])
    if not len(v):
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) > 1 and v.std(ddof=1) > 0:
        ci = stats.ttest_1samp(v, 0.0).confidence_interval(level)
        low, high = float(ci.low), float(ci.high)
    else:
        low = high = mean
    out = (mean, low, high)
    return tuple(_exp(x) for x in out) if log else out


def supported(low, high, null=0.0) -> str:
    """Whether an interval excludes the null value: "yes", "no", or "–" when there is no interval."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return "yes" if low > null or high < null else "no"


def _exp(x) -> float:
    return math.exp(x) if math.isfinite(x) else math.nan


# ----------------------------------------------------------------------------- rank correlation (Jiang et al. 2020)

def kendall_tau(measure, gap, level=LEVEL, n_resamples=2000, seed=0) -> dict:
    """Kendall's tau-b between a measure and the generalization gap over models (``scipy.stats.kendalltau``), with
    a percentile bootstrap interval over models (``scipy.stats.bootstrap``, paired resampling). NaN pairs dropped.
    With a handful of models some resamples repeat one model throughout and have no tau; scipy then has no
    interval, and the bounds stay NaN (the tables print tau alone)."""
    x, y = np.asarray(measure, float), np.asarray(gap, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"tau": math.nan, "low": math.nan, "high": math.nan, "n": len(x)}
    if len(x) < 2:
        return out
    out["tau"] = float(stats.kendalltau(x, y).statistic)
    if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            ci = stats.bootstrap((x, y), lambda a, b: stats.kendalltau(a, b).statistic, paired=True,
                                 vectorized=False, n_resamples=n_resamples, confidence_level=level,
                                 method="percentile", random_state=np.random.default_rng(seed)).confidence_interval
        out.update(low=float(ci.low), high=float(ci.high))
    return out


def granulated_tau(frame, measure, gap, axes, level=LEVEL, n_resamples=2000, seed=0) -> dict:
    """Jiang et al. 2020's Psi: for each hyperparameter axis, the mean Kendall tau between ``measure`` and ``gap``
    over the groups of models in which only that axis varies (every other axis held fixed); overall, the mean over
    the axes. Intervals: percentile bootstrap over each axis's groups (overall: each axis resampled independently).

    ``frame``: one row per model, with the columns ``axes``, ``measure`` and ``gap``. Returns {axis: {"psi", "low",
    "high", "groups"}, "overall": {...}}; a group with fewer than two models or a constant column adds nothing.
    """
    rng = np.random.default_rng(seed)
    per_axis = {}
    for axis in axes:
        others = [a for a in axes if a != axis]
        taus = []
        for _, group in (frame.groupby(others, dropna=False) if others else [(None, frame)]):
            g = group[[measure, gap]].dropna()
            if len(g) >= 2 and g[measure].nunique() > 1 and g[gap].nunique() > 1:
                taus.append(float(stats.kendalltau(g[measure], g[gap]).statistic))
        per_axis[axis] = np.asarray(taus)
    out = {}
    for axis, taus in per_axis.items():
        entry = {"psi": float(taus.mean()) if len(taus) else math.nan, "low": math.nan, "high": math.nan,
                 "groups": len(taus)}
        if len(taus) >= 2:
            boot = [rng.choice(taus, len(taus)).mean() for _ in range(n_resamples)]
            entry.update(low=float(np.quantile(boot, (1 - level) / 2)), high=float(np.quantile(boot, (1 + level) / 2)))
        out[axis] = entry
    used = [t for t in per_axis.values() if len(t)]
    overall = {"psi": float(np.mean([t.mean() for t in used])) if used else math.nan, "low": math.nan,
               "high": math.nan, "axes": len(used)}
    if used and all(len(t) >= 2 for t in used):
        boot = [np.mean([rng.choice(t, len(t)).mean() for t in used]) for _ in range(n_resamples)]
        overall.update(low=float(np.quantile(boot, (1 - level) / 2)), high=float(np.quantile(boot, (1 + level) / 2)))
    out["overall"] = overall
    return out
