"""The report's tables: mean ± sd over seeds, as Markdown and LaTeX, from the frames of ``collection.collect``.

``mean_sd`` is the one place that formats a mean ± sd; every table and the
facts use it.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from minima import runs
from minima.data import CLASS_NAMES
from minima.report.collection import (
    FACTS_ONLY,
    LABELS,
    ORIGINAL_ACCURACY,
    ORIGINAL_FINAL_EIGENVALUES,
    ORIGINAL_RATIO_MEDIAN,
    ok_runs,
    only_ok,
    optimizer_sort_key,
    optimizers_in,
)

ORIGINAL_NOTE = "\0original\0"  # where a caption's sentence about the original study's (MNIST) columns goes


def _decimals(value, significant) -> int:
    """Decimal places that give ``value`` about ``significant`` significant digits (0 to 8)."""
    if not np.isfinite(value) or value == 0:
        return significant - 1
    return int(min(8, max(0, significant - 1 - math.floor(math.log10(abs(value))))))


def mean_sd(values, decimals=4, significant=None) -> str:
    """``mean ± sd`` over seeds (sample sd), both to the same decimal place; the mean alone for one seed.

    ``significant`` picks the decimal place from the mean's magnitude instead of ``decimals``.
    An em dash when there are no values.
    """
    v = pd.Series(values, dtype=float).dropna()
    if len(v) == 0:
        return "—"
    mean = v.mean()
    d = decimals if significant is None else _decimals(mean, significant)
    if len(v) == 1:
        return f"{mean:.{d}f}"
    return f"{mean:.{d}f} ± {v.std(ddof=1):.{d}f}"


def _max(values, spec=".1e") -> str:
    v = pd.Series(values, dtype=float).dropna()
    return format(v.max(), spec) if len(v) else "—"


def _data_line(runs) -> str:
    parts = []
    for (source, n_train, n_test, epochs), _ in runs.groupby(["data_source", "n_train", "n_test", "epochs"],
                                                            dropna=False):
        parts.append(f"{source} data, {n_train} train / {n_test} test, {epochs} epochs")
    line = "; ".join(parts)
    return line + (" — smoke runs, for testing only" if runs.smoke.any() else "")


def _diverged_note(runs) -> str:
    div = runs[runs.status == "diverged"].groupby("optimizer").size()
    if not len(div):
        return ""
    return " Diverged runs, counted but not averaged: " + ", ".join(
        f"{LABELS.get(o, o)} {div[o]}" for o in sorted(div.index, key=optimizer_sort_key)) + "."


def accuracy_table(frames) -> tuple[pd.DataFrame, str]:
    runs = frames["runs"]
    rows = []
    for opt in optimizers_in(runs):
        r = runs[runs.optimizer == opt]
        ok = r[r.status == "ok"]
        orig = ORIGINAL_ACCURACY.get(opt, (None, None))
        rows.append({"optimizer": LABELS.get(opt, opt), "n": len(ok), "diverged": int((r.status == "diverged").sum()),
                     "train acc": mean_sd(ok.train_accuracy), "test acc": mean_sd(ok.test_accuracy),
                     "original train acc": "—" if orig[0] is None else f"{orig[0]:.4f}",
                     "original test acc": "—" if orig[1] is None else f"{orig[1]:.4f}"})
    caption = f"Train and test accuracy, mean ± sd over n seeds ({_data_line(runs)})." + ORIGINAL_NOTE + \
        _diverged_note(runs)
    return _original_beside(pd.DataFrame(rows), caption, " The two 'original' columns are the original study's "
                            "Table I: full MNIST (60,000 train / 10,000 test), one seed — different data, for "
                            "orientation only, not a like-for-like comparison.", runs)


def spectrum_table(frames) -> tuple[pd.DataFrame, str]:
    runs = ok_runs(frames)
    rows = []
    for opt in optimizers_in(runs):
        r = runs[runs.optimizer == opt]
        tracked = r.get("spectrum_steps", pd.Series(dtype=float)).fillna(0).sum()
        below = r.get("steps_ratio_below_1", pd.Series(dtype=float)).fillna(0).sum()
        orig = ORIGINAL_RATIO_MEDIAN.get(opt)
        rows.append({"optimizer": LABELS.get(opt, opt), "n": len(r),
                     "λ1": mean_sd(r.get("lambda1"), significant=4), "max residual λ1": _max(r.get("residual1")),
                     "λ2": mean_sd(r.get("lambda2"), significant=4), "max residual λ2": _max(r.get("residual2")),
                     "trace": mean_sd(r.get("trace"), significant=4),
                     "gap λ1−λ2": mean_sd(r.get("gap"), significant=4), "ratio λ1/λ2": mean_sd(r.get("ratio"), 3),
                     "median ratio, tracked steps": mean_sd(r.get("median_ratio"), 3),
                     "median gap, tracked steps": mean_sd(r.get("median_gap"), significant=4),
                     "ratio < 1": f"{below / tracked:.3f} ({int(below)}/{int(tracked)})" if tracked else "—",
                     "original median ratio": "—" if orig is None else f"{orig:.2f}"})
    steps = sorted({int(s) for s in runs.get("spectrum_steps", pd.Series(dtype=float)).dropna()})
    caption = ("Top of the Hessian spectrum on the seeded Hessian batch, mean ± sd over n seeds "
               f"({_data_line(frames['runs'])}). λ1, λ2 (largest algebraic, sorted), their residuals "
               "‖Hv−λv‖/|λ| (worst seed), the Hutchinson trace, gap and ratio are at the final weights; the two "
               f"medians are per-seed medians over the tracked last {', '.join(map(str, steps)) or 'few'} steps, then "
               "averaged. 'ratio < 1' is the fraction of all tracked steps (pooled over seeds) with λ1/λ2 < 1, which "
               "sorted, converged eigenvalues can only give when λ2 ≤ 0." + ORIGINAL_NOTE
               + _diverged_note(frames["runs"]))
    return _original_beside(pd.DataFrame(rows), caption, " The last column is the original's median ratio "
                            "(PyHessian, full MNIST, one seed), labelled 'spectral gap' there.", frames["runs"])


def _original_beside(table, caption, original_note, runs_frame) -> tuple[pd.DataFrame, str]:
    """The caption with ``original_note`` (the sentence about the original study's columns) spliced in before its
    diverged-runs note, for MNIST; for another dataset the original's (MNIST) columns go, and so does the note."""
    if _datasets(runs_frame) == {"mnist"}:
        return table, caption.replace(ORIGINAL_NOTE, original_note)
    table = table.drop(columns=[c for c in table.columns if c.startswith("original")])
    return table, caption.replace(ORIGINAL_NOTE, "")


def _datasets(runs_frame) -> set:
    """The datasets of the collected runs: a ``dataset`` column if there is one, else each run's config.json."""
    if "dataset" in runs_frame:
        return set(runs_frame["dataset"].fillna("mnist"))
    return {runs.load_json(Path(d) / runs.CONFIG).get("data", {}).get("dataset", "mnist")
            for d in runs_frame.get("run_dir", [])}


def per_class_table(frames) -> tuple[pd.DataFrame, str]:
    """Rows are MNIST's digits 0-9, or the class names when every run is on another dataset (Fashion-MNIST)."""
    pc = frames["per_class"]
    datasets = _datasets(frames["runs"])
    named = len(datasets) == 1 and datasets != {"mnist"}
    table = (pd.DataFrame({"class": list(CLASS_NAMES[datasets.pop()])}) if named
             else pd.DataFrame({"digit": range(10)}))
    for opt in optimizers_in(pc):
        p = pc[pc.optimizer == opt]
        n = p.seed.nunique()
        table[f"{LABELS.get(opt, opt)} (n={n})"] = [mean_sd(p[p.digit == d].accuracy) for d in range(10)]
    caption = (f"Test accuracy per true {'class' if named else 'digit'}, mean ± sd over n seeds "
               f"({_data_line(frames['runs'])})." + _diverged_note(frames["runs"]))
    return table, caption


def batch_sort_key(batch):
    return (1, 0) if batch == "full" else (0, int(batch))


def sensitivity_table(frames) -> tuple[pd.DataFrame, str]:
    sens = only_ok(frames["sensitivity"], frames)
    rows = []
    for opt in optimizers_in(sens):
        s = sens[sens.optimizer == opt]
        for batch in sorted(s.batch.unique(), key=batch_sort_key):
            b = s[s.batch == batch]
            rows.append({"optimizer": LABELS.get(opt, opt), "Hessian batch": batch,
                         "samples": int(b.n_samples.max()), "n": len(b),
                         "λ1": mean_sd(b.lambda1, significant=4), "λ2": mean_sd(b.lambda2, significant=4),
                         "max residual λ1": _max(b.residual1), "trace": mean_sd(b.trace, significant=4)})
    probes = sorted({int(t) for t in sens.get("trace_samples", pd.Series(dtype=float)).dropna()})
    caption = ("How the curvature at the final weights depends on the size of the Hessian batch (the original used "
               "100 samples drawn with replacement), mean ± sd over n seeds."
               + (f" Traces here use {', '.join(map(str, probes))} Hutchinson probes." if probes else "")
               + _diverged_note(frames["runs"]))
    return pd.DataFrame(rows), caption


def pyhessian_table(frames) -> tuple[pd.DataFrame, str]:
    runs = ok_runs(frames)
    rows = []
    for opt in optimizers_in(runs):
        r = runs[runs.optimizer == opt]
        if "pyhessian_lambda1" not in r:
            continue
        orig = ORIGINAL_FINAL_EIGENVALUES.get(opt)
        rows.append({"optimizer": LABELS.get(opt, opt), "n": len(r),
                     "ours λ1": mean_sd(r.lambda1, significant=4), "ours λ2": mean_sd(r.lambda2, significant=4),
                     "ours max residual": _max(pd.concat([r.residual1, r.residual2])),
                     "PyHessian λ1": mean_sd(r.pyhessian_lambda1, significant=4),
                     "PyHessian λ2": mean_sd(r.pyhessian_lambda2, significant=4),
                     "PyHessian max residual": _max(pd.concat([r.pyhessian_residual1, r.pyhessian_residual2])),
                     "PyHessian λ2 < 0": f"{int((r.pyhessian_lambda2 < 0).sum())}/{len(r)}",
                     "original λ1, λ2": "—" if orig is None else f"{orig[0]:.4f}, {orig[1]:.4f}"})
    caption = ("Top-2 eigenvalues at the final weights on the same Hessian batch: ours (largest algebraic, sorted, "
               "with residuals) against PyHessian's power iteration with deflation (the original's method, which "
               "finds the largest-magnitude eigenvalues, unsorted, with no convergence test), mean ± sd over n "
               "seeds." + ORIGINAL_NOTE + _diverged_note(frames["runs"]))
    return _original_beside(pd.DataFrame(rows), caption, " The last column is the original study's PyHessian "
                            "answer (full MNIST, one seed; only SGD and AdaHessian were reported).", frames["runs"])


def instruments_table(frames) -> tuple[pd.DataFrame, str]:
    track, runs = only_ok(frames["tracking"], frames), ok_runs(frames)
    rows = []
    for opt in optimizers_in(track):
        t = track[track.optimizer == opt]
        late = t[t.step > t.groupby("seed").step.transform("max") / 2]  # the second half of training
        per_seed = late.groupby("seed")
        r = runs[runs.optimizer == opt]
        rows.append({"optimizer": LABELS.get(opt, opt), "n": t.seed.nunique(),
                     "λ1(P⁻¹H) / threshold, median 2nd half": mean_sd(per_seed.precond_ratio.median(), 3),
                     "max over training": mean_sd(t.groupby("seed").precond_ratio.max(), 3),
                     "raw λ1 / threshold, median 2nd half": mean_sd((late.lambda1 / late.threshold)
                                                                    .groupby(late.seed).median(), significant=3),
                     "top-k share, Hessian batch, median": mean_sd(t.groupby("seed").overlap_hessian_batch.median(), 3),
                     "top-k share, last mini-batch, median": mean_sd(t.groupby("seed").overlap_last_batch.median(), 3),
                     "outliers (full data)": mean_sd(r.get("n_outliers"), 1)})
    k = sorted({int(v) for v in track.get("k", pd.Series(dtype=float)).dropna()})
    caption = ("Stability and subspace through training, mean ± sd over n seeds: the preconditioned sharpness "
               "λ1(P⁻¹H) and the raw λ1 divided by the optimizer's stability threshold (1 = the edge of stability; "
               "2/η for SGD and SAM, (2 + 2β1)/((1 − β1)η) for Adam and AdaHessian, 2/η_t for AdaGrad), per-seed "
               "medians over the second half of training and the maximum; the share ||VVᵀg||²/||g||² of the "
               f"gradient in the top-{', '.join(map(str, k)) or 'k'} eigenspace (per-seed medians over training); "
               "and the number of outliers among the top eigenvalues of the full training set's Hessian at the "
               "final weights (the largest ratio λ_i/λ_(i+1))." + _diverged_note(frames["runs"]))
    return pd.DataFrame(rows), caption


def equal_loss_table(frames) -> tuple[pd.DataFrame, str]:
    eq = only_ok(frames["equal_loss"], frames)
    rows = []
    for threshold in sorted(eq.loss_threshold.unique(), reverse=True) if len(eq) else []:
        at = eq[eq.loss_threshold == threshold]
        for opt in optimizers_in(at):
            e = at[at.optimizer == opt]
            rows.append({"train loss below": f"{threshold:g}", "optimizer": LABELS.get(opt, opt), "n": len(e),
                         "epoch": mean_sd(e.epoch, 1), "λ1": mean_sd(e.lambda1, significant=3),
                         "λ1(P⁻¹H)": mean_sd(e.precond_lambda1, significant=3),
                         "trace": mean_sd(e.trace, significant=3)})
    caption = ("Curvature at equal training loss: λ1, the preconditioned λ1(P⁻¹H) and a 10-probe Hutchinson trace "
               "on the Hessian batch, measured at the first epoch end where the full-batch training loss fell below "
               "each threshold, mean ± sd over the n seeds that reached it." + _diverged_note(frames["runs"]))
    return pd.DataFrame(rows), caption


TABLES = {"accuracy": accuracy_table, "spectrum": spectrum_table, "per_class": per_class_table,
          "instruments": instruments_table, "equal_loss": equal_loss_table,
          "sensitivity": sensitivity_table, "pyhessian": pyhessian_table}

TEX = {"⁻¹": r"$^{-1}$", "ᵀ": r"$^T$", "²": r"$^2$", "±": r"$\pm$", "λ1": r"$\lambda_1$", "λ2": r"$\lambda_2$",
       "—": "--", "−": "$-$", "‖": r"$\|$", "η": r"$\eta$", "β": r"$\beta$", "λ": r"$\lambda$",
       "≤": r"$\le$", "<": r"$<$", "’": "'"}


def _tex(text) -> str:
    text = str(text)
    for ch, esc in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                    ("_", r"\_"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(ch, esc)
    for token, esc in TEX.items():
        text = text.replace(token, esc)
    return text


NO_ROWS = "No run that finished without diverging has these numbers."


def to_markdown(table, title, caption) -> str:
    if table.empty:
        return f"### {title}\n\n{caption}\n\n{NO_ROWS}\n"
    lines = [f"### {title}", "", caption, "",
             "| " + " | ".join(map(str, table.columns)) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(table, name, caption) -> str:
    if table.empty:
        return f"% {name}: {_tex(caption)}\n% {NO_ROWS}\n"
    lines = [r"% written by minima.report from results/; needs \usepackage{booktabs}", r"\begin{table}[ht]",
             r"\centering", r"\small", rf"\caption{{{_tex(caption)}}}", rf"\label{{tab:{name}}}",
             r"\begin{tabular}{l" + "r" * (len(table.columns) - 1) + "}", r"\toprule",
             " & ".join(_tex(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def summary_tables(frames) -> dict:
    """name -> (table of formatted strings, caption), for every table the report has."""
    return {name: make(frames) for name, make in TABLES.items()}


def write_table(tables_dir, stem, title, table, caption) -> list[Path]:
    """One table as ``<stem>.md`` and ``<stem>.tex`` in ``tables_dir``, each written atomically."""
    written = []
    for path, text in ((Path(tables_dir) / f"{stem}.md", to_markdown(table, title, caption)),
                       (Path(tables_dir) / f"{stem}.tex", to_latex(table, stem, caption))):
        runs.atomic_write(path, lambda f, t=text: f.write(t.encode()))
        written.append(path)
    return written


def write_tables(frames, tables_dir) -> list[Path]:
    """Each table as ``<name>.md`` and ``<name>.tex``, plus ``runs.csv`` (the per-run numbers behind them)."""
    tables_dir, written = Path(tables_dir), []
    for name, (table, caption) in summary_tables(frames).items():
        written += write_table(tables_dir, name, name.replace("_", " ").capitalize(), table, caption)
    path = tables_dir / "runs.csv"
    table = frames["runs"].drop(columns=[c for c in FACTS_ONLY if c in frames["runs"]])
    runs.atomic_write(path, lambda f: f.write(table.to_csv(index=False).encode()))
    return written + [path]
