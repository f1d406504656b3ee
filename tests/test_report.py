"""The report: collector, tables and the plotting notebook, on a synthetic results tree built here.

The fixture tree has 2 optimizers x 2 seeds of complete runs, one diverged run,
one incomplete folder (no ``done``) and one sweep run, all with format-correct
files. Table values are checked against numbers recomputed from the fixture.
"""

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest

from minima import runs, schema
from minima.report import build as report_build
from minima.report import collection, facts, figures, tables

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS, SEEDS = ("sgd", "adam"), (0, 1)
EPOCHS, STEPS_PER_EPOCH, TRACKED, POINTS = 3, 4, 6, 7
LR = {"sgd": 0.1, "adam": 0.001}
# Tiny figures: the notebook's run time is dominated by drawing and saving.
SMALL = {"DPI": 30, "FIGSIZE": [4, 3], "FIGSIZE_WIDE": [5, 2], "FIGSIZE_GRID": [5, 3], "FIG_FORMATS": ["png", "pdf"]}


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _config(optimizer, seed):
    return {"optimizer": optimizer, "seed": seed, "hyperparameters": {"lr": LR[optimizer]}, "overrides": {},
            "epochs": EPOCHS, "batch_size": 100, "eval_batch_size": 2000, "smoke": False,
            "data": {"source_requested": "auto", "source": "embedded", "n_train": 400, "n_test": 200,
                     "n_validation": 0},
            "hessian": {"batch_size": 100, "spectral_steps": TRACKED, "sensitivity_batches": [100, 1000, "full"]},
            "landscape": {"points": POINTS, "radius": 1.0}, "sweep": None,
            "provenance": {"versions": {"torch": "2.14.1"}, "device": {"type": "cpu"}, "git_commit": "unknown"}}


def _history(rng, epochs):
    return pd.DataFrame([{"epoch": e, "step": e * STEPS_PER_EPOCH, "train_loss": 1 / e, "train_accuracy": 0.8,
                          "test_loss": 1.2 / e, "test_accuracy": 0.78, "grad_norm_full": rng.uniform(0.1, 1),
                          "grad_norm_last_batch": rng.uniform(0.5, 2), "train_time_s": 0.1, "epoch_time_s": 0.2}
                         for e in range(1, epochs + 1)])


def write_run(root, optimizer, seed, rng, *, status="ok", done=True) -> dict:
    """One format-correct run folder; returns the numbers the tables should be built from."""
    run = root / optimizer / f"seed{seed}"
    run.mkdir(parents=True)
    _write(run / "config.json", json.dumps(_config(optimizer, seed)))
    if status == "diverged":
        _write(run / "history.csv", _history(rng, 1).to_csv(index=False))
        _write(run / "final.json", json.dumps(schema.FINAL.example(
            status="diverged", epochs_completed=1, diverged_at={"epoch": 2, "step": 6, "loss": float("nan")})))
        if done:
            _write(run / "done", "2025-01-01T00:00:00\n")
        return {}
    counts = rng.integers(0, 4, size=(10, 10)) + np.diag(rng.integers(15, 20, size=10))  # rows: true class
    per_class = (np.diag(counts) / counts.sum(1)).tolist()
    final = schema.FINAL.example(status="ok", diverged_at=None, epochs_completed=EPOCHS,
                                 train_accuracy=float(rng.uniform(0.95, 1.0)),
                                 test_accuracy=float(np.trace(counts) / counts.sum()),
                                 test_per_class_accuracy=per_class, test_confusion_matrix=counts.tolist(),
                                 train_loss=0.01, test_loss=0.1)
    _write(run / "history.csv", _history(rng, EPOCHS).to_csv(index=False))
    _write(run / "final.json", json.dumps(final))
    steps = np.arange(EPOCHS * STEPS_PER_EPOCH - TRACKED + 1, EPOCHS * STEPS_PER_EPOCH + 1)
    lam1 = rng.uniform(2, 5, TRACKED)
    lam2 = lam1 / rng.uniform(1.2, 3, TRACKED)
    if optimizer == "adam" and seed == 1:
        lam2[:2] = -0.3  # an indefinite Hessian: ratio below 1 on two steps
    spectrum = pd.DataFrame({"epoch": EPOCHS, "step": steps, "lambda1": lam1, "lambda2": lam2, "gap": lam1 - lam2,
                             "ratio": lam1 / lam2, "residual1": 1e-5, "residual2": 2e-5, "n_hvps": 30,
                             "converged": True})
    _write(run / "spectrum.csv", spectrum.to_csv(index=False))
    sharp = pd.DataFrame({"epoch": [1, 2, 3], "step": [4, 8, 12], "lambda1": rng.uniform(1, 30, 3),
                          "residual1": 1e-5, "n_hvps": 20, "converged": True})
    _write(run / "sharpness.csv", sharp.to_csv(index=False))
    top = sorted(rng.uniform(0.5, 20, 5), reverse=True)
    py = [top[0] * 1.01, -top[1] if seed == 0 else top[1]]
    sensitivity = [schema.SENSITIVITY.example(
        batch=b, n_samples=n, lambda1=float(rng.uniform(1, 20)), lambda2=float(rng.uniform(0.1, 1)), residual1=1e-5,
        residual2=1e-5, converged=True, trace=float(rng.uniform(50, 100)), trace_stderr=1.0, trace_samples=20)
        for b, n in (("100", 100), ("1000", 1000), ("full", 400))]
    curvature = schema.CURVATURE.example(
        hessian_batch_size=100, top_eigenvalues=top, residuals=[1e-5, 3e-5, 1e-5, 1e-5, 1e-5], n_hvps=60,
        converged=True, gap=top[0] - top[1], ratio=top[0] / top[1],
        pyhessian={"eigenvalues": py, "residuals": [1e-3, 0.5], "n_hvps": 76, "converged": False},
        trace={"mean": float(rng.uniform(100, 200)), "stderr": 3.0, "n_samples": 100},
        density_n_hvps=36, batch_sensitivity=sensitivity)
    _write(run / "curvature.json", json.dumps(curvature))
    grid = np.linspace(-1, 25, 60)
    np.savez_compressed(run / "density.npz", nodes=rng.uniform(-1, 20, (2, 8)), weights=np.full((2, 8), 1 / 8),
                        grid=grid, density=np.exp(-grid ** 2) + 1e-4)
    a = np.linspace(-1, 1, POINTS)
    A, B = np.meshgrid(a, a, indexing="ij")
    np.savez_compressed(run / "landscape.npz", alphas=a, eig_1d=0.05 + top[0] * a ** 2 / 2,
                        eig_2d=0.05 + (top[0] * A ** 2 + top[1] * B ** 2) / 2, random_1d=0.05 + a ** 2,
                        random_2d=0.05 + A ** 2 + 2 * B ** 2)
    if done:
        _write(run / "done", "2025-01-01T00:00:00\n")
    return {"final": final, "spectrum": spectrum, "curvature": curvature}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fixture tree, and the report built from it once (the notebook run dominates this file's time)."""
    base = tmp_path_factory.mktemp("report")
    results, rng, truth = base / "results", np.random.default_rng(0), {}
    for opt in OPTIMIZERS:
        for seed in SEEDS:
            truth[opt, seed] = write_run(results, opt, seed, rng)
    write_run(results, "adam", 2, rng, status="diverged")
    write_run(results, "sgd", 5, rng, done=False)  # incomplete: must not count
    write_run(results / "sweeps" / "lr" / "sgd-lr0.05", "sgd", 0, rng)  # sweeps are not part of the report
    tuned, tuned_truth = base / "tuned", {}  # the study at the selected learning rates, in the fair comparison
    for opt in OPTIMIZERS:
        for seed in SEEDS:
            tuned_truth[opt, seed] = write_run(tuned, opt, seed, rng)
    full, full_truth = results / "fashion-mnist", {}  # the full-size study: its own folder under the results
    for opt in OPTIMIZERS:
        for seed in SEEDS:
            full_truth[opt, seed] = write_run(full, opt, seed, rng)
            cfg_path = full / opt / f"seed{seed}" / "config.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["data"].update(dataset="fashion-mnist", n_train=60000, n_test=10000, source="torchvision")
            cfg_path.write_text(json.dumps(cfg))
            curv_path = full / opt / f"seed{seed}" / "curvature.json"  # the final analysis's wall time
            curv_path.write_text(json.dumps(dict(json.loads(curv_path.read_text()),
                                                 time_s=3600.0 * (1 + seed) if opt == "sgd" else 1800.0)))
    sweep = write_sweep(base / "sweep_results", rng)
    out = report_build.build(results_dir=str(results), report_dir=str(base / "report"), parameters=SMALL,
                             tuned_dir=str(tuned), sweep_dir=str(sweep))
    return {"results": results, "report": base / "report", "truth": truth, "out": out, "tuned": tuned_truth,
            "full": full_truth}


def write_sweep(root, rng):
    """A collected learning-rate sweep of finished train-only runs (history with validation, final.json, done)."""
    from minima.sweeps import cli, plan

    configs = plan.plan_sweep("lr", list(OPTIMIZERS), [0, 1], lr_grid={"sgd": [0.05, 0.1], "adam": [0.001, 0.01]},
                              results_dir=root)
    plan.record_plan("lr", configs, {})
    for cfg in configs:
        run = runs.run_dir_for(cfg)
        _write(run / "config.json", json.dumps(cfg))
        # the selection: sgd 0.05 (not its original 0.1), adam 0.001 (its original, so the original runs serve)
        acc = 0.95 if cfg["overrides"]["lr"] in (0.05, 0.001) else 0.93
        _write(run / "history.csv", pd.DataFrame([{"epoch": 1, "val_accuracy": acc, "val_loss": 1 - acc}])
               .to_csv(index=False))
        _write(run / "final.json", json.dumps({"status": "ok", "test_accuracy": acc - 0.01}))
        _write(run / "done", "2025-01-01T00:00:00\n")
    cli.collect("lr", root, echo=False)
    return plan.sweep_dir("lr", root)


def markdown_table(path) -> pd.DataFrame:
    lines = [line for line in Path(path).read_text().splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return pd.DataFrame(cells[2:], columns=cells[0])


def assert_as_printed(text, expected):
    """``text`` equals ``expected`` to the precision it was printed with."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    tolerance = 0.5 * 10.0 ** (-decimals) * 10.0 ** int(exponent or 0) * (1 + 1e-9)
    assert abs(float(text) - expected) <= tolerance, (text, expected)


def check_mean_sd(cell, values):
    """A 'mean ± sd' cell equals the mean and sample sd of ``values`` to its printed precision."""
    mean, sd = cell.split("±")
    assert_as_printed(mean, np.mean(values))
    assert_as_printed(sd, np.std(values, ddof=1))


def test_build_writes_every_figure_table_and_the_executed_notebook(built):
    rep = built["report"]
    for name in report_build.FIGURES:
        for fmt in ("png", "pdf"):
            path = rep / "figures" / f"{name}.{fmt}"
            assert path.exists() and path.stat().st_size > 0, path
    for name in ("accuracy", "spectrum", "per_class", "sensitivity", "pyhessian"):
        for ext in ("md", "tex"):
            assert (rep / "tables" / f"{name}.{ext}").stat().st_size > 0
    executed = nbformat.read(rep / ".executed" / "plotting_results.ipynb", as_version=4)
    assert not any(o.get("output_type") == "error" for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert not list(rep.glob("**/*.tmp"))  # atomic writes leave no temporary files behind


def test_fair_comparison_tables_and_figures_for_both_studies(built):
    from scipy import stats

    rep = built["report"]
    for name in ("lr_sensitivity", "studies_side_by_side", "time_to_target"):
        assert (rep / "figures" / f"{name}.png").stat().st_size > 0
    for study in ("original", "tuned"):
        for name in ("accuracy_pairs", "speed", "equal_loss_ratios"):
            assert (rep / "tables" / f"fair_{study}_{name}.md").stat().st_size > 0
    pairs = markdown_table(rep / "tables" / "fair_tuned_accuracy_pairs.md")
    sgd = [built["tuned"]["sgd", s]["final"]["test_accuracy"] for s in SEEDS]  # its own tuned runs
    adam = [built["truth"]["adam", s]["final"]["test_accuracy"] for s in SEEDS]  # selected = original: those runs
    ci = stats.ttest_ind(sgd, adam, equal_var=False).confidence_interval(0.95)
    diff, low, high = (float(x) for x in re.findall(r"-?\d+\.\d+", pairs.iloc[0]["difference [95 % CI]"]))
    for printed, expected in ((diff, np.mean(sgd) - np.mean(adam)), (low, ci.low), (high, ci.high)):
        assert abs(printed - expected) <= 5e-5


def test_full_size_study_gets_its_tables_figures_and_the_comparison_with_the_embedded_one(built):
    rep = built["report"]
    for name in ("accuracy", "sharpness", "spectral_ratio_gap"):
        assert (rep / "figures" / f"full_size_{name}.png").stat().st_size > 0
    accuracy = markdown_table(rep / "tables" / "full_size_accuracy.md")
    assert not [c for c in accuracy.columns if c.startswith("original")]  # the original's numbers are MNIST's
    assert "original" not in (rep / "tables" / "full_size_accuracy.md").read_text().split("\n", 2)[-1].lower()
    assert [c for c in markdown_table(rep / "tables" / "accuracy.md").columns if c.startswith("original")]
    for opt, cell in zip(OPTIMIZERS, accuracy["test acc"]):
        check_mean_sd(cell, [built["full"][opt, s]["final"]["test_accuracy"] for s in SEEDS])
    assert (rep / "tables" / "fair_full_size_accuracy_pairs.md").stat().st_size > 0
    table = markdown_table(rep / "tables" / "full_size_comparison.md")
    row = table[(table.statistic == "λ1 at the end / SGD's") & (table.optimizer == "Adam")].iloc[0]
    expected = {}
    for study, column in (("truth", "embedded MNIST (4,000)"), ("full", "Fashion-MNIST (60,000)")):
        lam = {opt: [built[study][opt, s]["curvature"]["top_eigenvalues"][0] for s in SEEDS] for opt in OPTIMIZERS}
        expected[study] = np.exp(np.mean(np.log(lam["adam"])) - np.mean(np.log(lam["sgd"])))
        assert abs(float(row[column].split()[0]) / expected[study] - 1) < 5e-3  # printed to 3 significant digits
    assert row["n"] == "2 / 2"
    assert row["same side of 1"] == ("yes" if (expected["truth"] - 1) * (expected["full"] - 1) > 0 else "no")
    test_acc = table[(table.statistic == "test accuracy") & (table.optimizer == "SGD")].iloc[0]
    for study, column in (("full", "Fashion-MNIST (60,000)"), ("truth", "embedded MNIST (4,000)")):
        check_mean_sd(test_acc[column], [built[study]["sgd", s]["final"]["test_accuracy"] for s in SEEDS])


def test_accuracy_table_equals_a_recomputation_from_the_fixture(built):
    table = markdown_table(built["report"] / "tables" / "accuracy.md").set_index("optimizer")
    for opt in OPTIMIZERS:
        row = table.loc[collection.LABELS[opt]]
        assert int(row["n"]) == len(SEEDS)
        for key in ("train_accuracy", "test_accuracy"):
            check_mean_sd(row[key.replace("_accuracy", " acc")], [built["truth"][opt, s]["final"][key] for s in SEEDS])
    assert table.loc["Adam", "diverged"] == "1" and table.loc["SGD", "diverged"] == "0"
    assert table.loc["SGD", "original test acc"] == "0.9893" and table.loc["Adam", "original train acc"] == "0.9996"
    text = (built["report"] / "tables" / "accuracy.md").read_text()
    assert "original study's Table I" in text and "different data" in text
    tex = (built["report"] / "tables" / "accuracy.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "±" not in tex


def test_spectrum_table_equals_a_recomputation_from_the_fixture(built):
    table = markdown_table(built["report"] / "tables" / "spectrum.md").set_index("optimizer")
    truth = built["truth"]
    for opt in OPTIMIZERS:
        row = table.loc[collection.LABELS[opt]]
        curv = [truth[opt, s]["curvature"] for s in SEEDS]
        spec = [truth[opt, s]["spectrum"] for s in SEEDS]
        check_mean_sd(row["λ1"], [c["top_eigenvalues"][0] for c in curv])
        check_mean_sd(row["λ2"], [c["top_eigenvalues"][1] for c in curv])
        check_mean_sd(row["trace"], [c["trace"]["mean"] for c in curv])
        check_mean_sd(row["ratio λ1/λ2"], [c["top_eigenvalues"][0] / c["top_eigenvalues"][1] for c in curv])
        check_mean_sd(row["median ratio, tracked steps"], [np.median(s.lambda1 / s.lambda2) for s in spec])
        check_mean_sd(row["median gap, tracked steps"], [np.median(s.lambda1 - s.lambda2) for s in spec])
        assert_as_printed(row["max residual λ2"], 3e-5)
        below = sum(int((s.lambda1 / s.lambda2 < 1).sum()) for s in spec)
        assert row["ratio < 1"] == f"{below / (TRACKED * len(SEEDS)):.3f} ({below}/{TRACKED * len(SEEDS)})"
    assert table.loc["Adam", "ratio < 1"].endswith("(2/12)") and table.loc["SGD", "ratio < 1"].startswith("0.000")
    assert table.loc["SGD", "original median ratio"] == "2.94" and table.loc["Adam", "original median ratio"] == "1.55"


def test_per_class_sensitivity_and_pyhessian_tables(built):
    rep, truth = built["report"], built["truth"]
    per_class = markdown_table(rep / "tables" / "per_class.md").set_index("digit")
    for opt in OPTIMIZERS:
        column = per_class[f"{collection.LABELS[opt]} (n={len(SEEDS)})"]
        for digit in (0, 3, 9):
            check_mean_sd(column[str(digit)], [truth[opt, s]["final"]["test_per_class_accuracy"][digit] for s in SEEDS])
    sens = markdown_table(rep / "tables" / "sensitivity.md")
    row = sens[(sens.optimizer == "SGD") & (sens["Hessian batch"] == "full")].iloc[0]
    assert row["samples"] == "400" and row["n"] == "2"
    full = [next(b for b in truth["sgd", s]["curvature"]["batch_sensitivity"] if b["batch"] == "full") for s in SEEDS]
    check_mean_sd(row["λ1"], [b["lambda1"] for b in full])
    check_mean_sd(row["trace"], [b["trace"] for b in full])
    assert list(sens[sens.optimizer == "Adam"]["Hessian batch"]) == ["100", "1000", "full"]
    py = markdown_table(rep / "tables" / "pyhessian.md").set_index("optimizer")
    check_mean_sd(py.loc["Adam", "PyHessian λ1"],
                  [truth["adam", s]["curvature"]["pyhessian"]["eigenvalues"][0] for s in SEEDS])
    assert py.loc["SGD", "PyHessian λ2 < 0"] == "1/2"  # seed 0's deflated answer is negative
    assert py.loc["SGD", "PyHessian max residual"] == "5.0e-01"
    assert py.loc["SGD", "original λ1, λ2"] == "0.6189, 0.2001" and py.loc["Adam", "original λ1, λ2"] == "—"


def test_incomplete_folder_ignored_and_diverged_run_counted_not_averaged(built, capsys):
    frames = collection.collect(built["results"])
    assert "sgd/seed5" in capsys.readouterr().out.replace("\\", "/")  # the printed note names it
    runs = frames["runs"]
    assert sorted(zip(runs.optimizer, runs.seed)) == [("adam", 0), ("adam", 1), ("adam", 2), ("sgd", 0), ("sgd", 1)]
    assert runs.set_index(["optimizer", "seed"]).loc[("adam", 2), "status"] == "diverged"
    assert ("sgd", 5) not in set(zip(frames["per_class"].optimizer, frames["per_class"].seed))
    assert set(collection.only_ok(frames["history"], frames).seed[lambda s: s == 2]) == set()  # figures skip it
    acc = markdown_table(built["report"] / "tables" / "accuracy.md").set_index("optimizer")
    check_mean_sd(acc.loc["Adam", "test acc"], [built["truth"]["adam", s]["final"]["test_accuracy"] for s in SEEDS])
    assert "Adam 1" in (built["report"] / "tables" / "per_class.md").read_text()  # every table notes the divergence


def test_tables_when_every_run_diverged(tmp_path):
    rng = np.random.default_rng(2)
    for opt in OPTIMIZERS:
        write_run(tmp_path, opt, 0, rng, status="diverged")
    frames = collection.collect(tmp_path)
    tables.write_tables(frames, tmp_path / "tables")
    acc = markdown_table(tmp_path / "tables" / "accuracy.md").set_index("optimizer")
    assert list(acc["n"]) == ["0", "0"] and list(acc["diverged"]) == ["1", "1"] and list(acc["test acc"]) == ["—", "—"]
    assert "No run that finished" in (tmp_path / "tables" / "spectrum.md").read_text()


@pytest.mark.parametrize("layout", ["empty", "missing", "only-incomplete"])
def test_no_complete_runs_is_one_clear_error(tmp_path, layout):
    results = tmp_path / "results"
    if layout != "missing":
        results.mkdir()
    if layout == "only-incomplete":
        write_run(results, "sgd", 0, np.random.default_rng(1), done=False)
    with pytest.raises(runs.StudyError) as err:
        report_build.build(results_dir=str(results), report_dir=str(tmp_path / "report"))
    message = str(err.value)
    assert "\n" not in message and ("no complete runs" in message or "does not exist" in message)
    assert not (tmp_path / "report").exists()


def test_plotting_notebook_is_thin_parameterised_and_without_outputs():
    path = ROOT / "notebooks" / "plotting_results.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    names = re.findall(r"^([A-Za-z_]\w*)\s*=", code[0].source, flags=re.M)
    assert {"RESULTS_DIR", "REPORT_DIR", "FIG_FORMATS", "DPI"} <= set(names) and all(n.isupper() for n in names)
    for cell in code:
        assert not cell.outputs and cell.execution_count is None
        assert not re.search(r"^\s*(def|class)\s", cell.source, flags=re.M), cell.source


def test_peak_accuracy_is_each_seeds_best_epoch_and_what_the_end_keeps(capsys):
    runs = pd.DataFrame([{"optimizer": "sgd", "seed": s, "status": st}
                         for s, st in ((0, "ok"), (1, "ok"), (2, "diverged"))])
    accuracy = {0: [0.80, 0.90, 0.90, 0.85], 1: [0.70, 0.75, 0.88, 0.87], 2: [0.99, 0.99, 0.99, 0.99]}
    loss = {0: [0.5, 0.3, 0.4, 0.6], 1: [0.6, 0.4, 0.35, 0.5], 2: [0.1] * 4}
    history = pd.DataFrame([{"optimizer": "sgd", "seed": s, "epoch": e + 1, "test_accuracy": a, "test_loss": loss[s][e]}
                            for s in accuracy for e, a in reversed(list(enumerate(accuracy[s])))])  # rows unsorted
    facts.peak_accuracy({"runs": runs, "history": history})
    # seed 0 peaks first at epoch 2 (tied at 3) and ends 0.05 below; seed 1 at epoch 3, 0.01 below; seed 2 diverged
    assert capsys.readouterr().out == ("peak test accuracy sgd: 0.8800 to 0.9000 at epochs 2 to 3; final - peak "
                                       "-0.0500 to -0.0100; test loss min 0.3 to 0.35, final 0.5 to 0.6\n")


def test_training_loss_figure_draws_every_seed_of_every_run_that_did_not_diverge():
    runs = pd.DataFrame([{"optimizer": o, "seed": s, "status": "diverged" if (o, s) == ("adam", 2) else "ok"}
                         for o in ("sgd", "adam") for s in (0, 1, 2)])
    rng = np.random.default_rng(3)
    loss = {(o, s): rng.uniform(1e-3, 1, 5) for o in ("sgd", "adam") for s in (0, 1, 2)}
    history = pd.DataFrame([{"optimizer": o, "seed": s, "epoch": e + 1, "train_loss": v}
                            for (o, s), values in loss.items() for e, v in reversed(list(enumerate(values)))])
    fig = figures.plot_training_loss({"runs": runs, "history": history})
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"SGD", "Adam"}
    for opt, title, seeds in (("sgd", "SGD", (0, 1, 2)), ("adam", "Adam", (0, 1))):
        lines = panels[title].get_lines()
        assert [line.get_label() for line in lines] == [f"seed {s}" for s in seeds]
        for line, s in zip(lines, seeds):
            np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 6))
            np.testing.assert_array_equal(line.get_ydata(), loss[opt, s])
        assert panels[title].get_yscale() == "log"
        # the shared y axis keeps its tick labels on every panel, the right-hand ones too
        fig.canvas.draw()
        assert any(t.get_visible() and t.get_text() for t in panels[title].get_yticklabels())
    plt.close(fig)


def test_loss_jumps_are_the_largest_late_rise_over_the_running_minimum(capsys):
    runs = pd.DataFrame([{"optimizer": "adam", "seed": s, "status": "ok"} for s in (0, 1)])
    loss = {0: [1.0, 0.5, 0.1, 0.01, 0.5, 0.02],  # a 50x rise at epoch 5, ending at 2x its lowest
            1: [1.0, 0.1, 0.2, 0.05, 0.1, 0.05]}  # the 2x at epoch 3 is in the first half; 2x at epoch 5 counts
    history = pd.DataFrame([{"optimizer": "adam", "seed": s, "epoch": e + 1, "train_loss": v}
                            for s in loss for e, v in reversed(list(enumerate(loss[s])))])  # rows unsorted
    facts.loss_jumps({"runs": runs, "history": history})
    assert capsys.readouterr().out == ("training-loss jumps in the second half, adam: largest rise over the lowest "
                                       "loss so far 2x to 50x (to 0.1 to 0.5) at epochs 5 to 5; final / lowest "
                                       "1x to 2x\n")


def test_report_facts_recompute_the_numbers_quoted_in_prose(built, capsys):
    facts.print_facts(built["results"])
    out = capsys.readouterr().out
    truth = built["truth"]
    assert "4 complete runs that did not diverge" in out  # the diverged, incomplete and sweep runs are left out
    mean = {opt: np.mean([truth[opt, s]["final"]["test_accuracy"] for s in SEEDS]) for opt in OPTIMIZERS}
    assert f"test accuracy, mean over seeds: sgd {mean['sgd']:.4f}, adam {mean['adam']:.4f}\n" in out
    below = sum(int((truth[key]["spectrum"].ratio < 1).sum()) for key in truth)
    assert below == 2 and f"tracked steps with ratio < 1: {below} of {TRACKED * len(truth)};" in out
    assert out.count("loss rise one unit from the minimum") == 2 and out.count("mean 1 (seeds 1 to 1)") == 2
    full = {opt: np.mean([built["full"][opt, s]["final"]["test_accuracy"] for s in SEEDS]) for opt in OPTIMIZERS}
    after = out.split("\nfull size (")[1]  # the full-size study's own numbers follow the embedded study's
    assert after.startswith(f"{built['results'] / 'fashion-mnist'}): 4 complete runs that did not diverge")
    assert f"test accuracy, mean over seeds: sgd {full['sgd']:.4f}, adam {full['adam']:.4f}\n" in after
    assert after.count("full size vs embedded: statistic λ1 at the end / SGD's; optimizer Adam") == 1
    # a run's cost is its epochs plus its final analysis (medians: SGD 60 and 120 min, Adam 30, each plus its
    # 0.2 s epochs), and two slots run SGD's beside Adam's
    assert "one run's training plus final analysis, minutes, median over seeds: sgd 90, adam 30\n" in after
    assert "one seed of the 2 optimizers: 2.0 h of runs, 1.5 h on two slots\n" in after
    assert facts._two_slots([3, 2, 2, 1]) == 4 and facts._two_slots([5, 1, 1]) == 5
