"""Every interval the report prints, from scipy's t tests: Welch's for two groups, the paired one over seeds, and
the one-sample interval of a mean; on the log scale for ratios and geometric means.

Each returns NaN bounds where there is no interval (fewer than two values), and an exact one where every value
agrees (scipy's interval is then undefined: a zero standard error).
"""

import math

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
