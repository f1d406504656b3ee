"""The analyses a run does at its final weights, packaged for the run folder.

Glue between the data (``minima.data``) and the two lift-out modules
(``curvature``, ``landscape``): top eigenpairs with residuals, the original's
PyHessian answer beside them, Hutchinson trace, spectral density, the
Hessian-batch sensitivity, and loss landscapes along eigenvectors and
filter-normalised random directions.
"""

import resource
import time
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from minima import curvature, landscape, runs, schema, subspace
from minima.data import Dataset, hessian_batch
from minima.krylov import GUARD_STEPS
from minima.spectrum_tracking import SpectrumTracker
from minima.tracking import Instruments

CRITERION = F.cross_entropy


def spectrum_tracker(data: Dataset, config) -> SpectrumTracker:
    """The per-step callback that tracks lambda1, lambda2 over the last steps and sharpness throughout."""
    h = config["hessian"]
    x, y = hessian_batch(data, h["batch_size"], config["seed"])
    return SpectrumTracker(CRITERION, x, y, spectral_steps=h["spectral_steps"],
                           sharpness_every=h["sharpness_every"], tol=h["tol"])


def trackers(data: Dataset, config) -> list:
    """The per-step callbacks of a run: the spectrum tracker and the instruments; none with tracking off."""
    if not config.get("tracking", {}).get("on", True):
        return []
    h, t = config["hessian"], config["tracking"]
    x, y = hessian_batch(data, h["batch_size"], config["seed"])
    return [spectrum_tracker(data, config),
            Instruments(CRITERION, x, y, every=h["sharpness_every"], k=t["subspace_k"],
                        thresholds=t["equal_loss_thresholds"], trace_samples=t["equal_loss_trace_samples"],
                        tol=h["tol"], seed=config["seed"])]


def save_tracking(callbacks, run_dir) -> None:
    """Each tracker's rows into its file of the run folder (spectrum, sharpness, tracking, equal_loss)."""
    for cb in callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]:
        if isinstance(cb, SpectrumTracker):
            runs.save_csv(Path(run_dir) / runs.SPECTRUM, schema.SPECTRUM.written(cb.spectrum))
            runs.save_csv(Path(run_dir) / runs.SHARPNESS, schema.SHARPNESS.written(cb.sharpness))
        elif isinstance(cb, Instruments):
            runs.save_csv(Path(run_dir) / runs.TRACKING, schema.TRACKING.written(cb.rows))
            runs.save_csv(Path(run_dir) / runs.EQUAL_LOSS, schema.EQUAL_LOSS.written(cb.equal_loss))


def final_curvature(model, data: Dataset, config, run_dir, progress=print) -> dict:
    """Top-k eigenpairs, trace, density and batch sensitivity; writes curvature.json and density.npz.

    Returns the summary dict plus, under ``"eigenvectors"``, the top vectors for the landscapes.
    """
    h, seed = config["hessian"], config["seed"]
    started = time.perf_counter()
    x, y = hessian_batch(data, h["batch_size"], seed)
    progress(f"top-{h['final_top_k']} eigenpairs on the {len(y)}-sample Hessian batch")
    # every final-weights solve is guarded against a missed eigenvalue (curvature.top_eigenpairs(guard=True))
    guard = dict(guard=True, guard_steps=h.get("guard_steps") or GUARD_STEPS)
    top = curvature.top_eigenpairs(model, CRITERION, x, y, k=h["final_top_k"], tol=h["tol"], **guard)
    # PyHessian's own answer, as the original computed it, judged at our tol
    original = curvature.top_eigenpairs(model, CRITERION, x, y, k=2, tol=h["tol"], method="pyhessian",
                                        max_hvps=h.get("pyhessian_max_hvps") or 500)
    progress(f"Hutchinson trace, {h['trace_samples']} probes")
    trace = curvature.hessian_trace(model, CRITERION, x, y, n_samples=h["trace_samples"], seed=seed)
    progress(f"spectral density, {h['density_runs']} x {h['density_steps']} Lanczos steps")
    density = curvature.spectral_density(model, CRITERION, x, y, n_runs=h["density_runs"],
                                         n_steps=h["density_steps"], seed=seed)
    full_x, full_y = hessian_batch(data, "full", seed)
    # every solve on a large batch (the full training set, the sensitivity's 1,000): float32 Lanczos certified and,
    # where it falls short, refined in float64 ("mixed"), over chunks whose graphs are kept while they fit
    chunk, precision = (h.get(key, runs.LEGACY_SOLVER[key]) for key in ("full_data_chunk", "full_data_precision"))
    n_top = h.get("outlier_top", 0)
    outliers, outliers_s = None, None
    # the longest solve (an hour at full size) journals its products: a stopped run resumes it where it stopped
    journal = curvature.HvpJournal(Path(run_dir) / runs.HVP_JOURNAL)
    if n_top:
        t0 = time.perf_counter()
        progress(f"top-{n_top} eigenvalues of the full training set's Hessian ({len(full_y)} samples, "
                 f"{precision} precision)")
        outliers = curvature.top_eigenpairs(model, CRITERION, full_x, full_y, k=n_top, tol=h["tol"],
                                            batch_size=chunk, precision=precision, progress=progress,
                                            journal=journal, **guard)
        outliers_s = journal.seconds(time.perf_counter() - t0)
        if journal.replayed:
            progress(f"  resumed: {journal.replayed} of its {outliers.n_hvps} products read back from {journal.folder}")
    sensitivity = []
    for size in h["sensitivity_batches"]:
        t0 = time.perf_counter()
        if size == h["batch_size"]:  # the very batch analysed above (same size, same seed): reuse, don't recompute
            eig, tr, by = top, trace, y
        elif size == "full" and outliers is not None:  # its top two are the full-data outliers' first two
            by = full_y
            eig = outliers
            progress(f"Hessian-batch sensitivity: {len(by)} samples")
            tr = curvature.hessian_trace(model, CRITERION, full_x, full_y, n_samples=h["sensitivity_trace_samples"],
                                         seed=seed, batch_size=chunk)
        else:
            bx, by = hessian_batch(data, size, seed)
            progress(f"Hessian-batch sensitivity: {len(by)} samples")
            eig = curvature.top_eigenpairs(model, CRITERION, bx, by, k=2, tol=h["tol"], batch_size=chunk,
                                           precision=precision, **guard)
            tr = curvature.hessian_trace(model, CRITERION, bx, by, n_samples=h["sensitivity_trace_samples"],
                                         seed=seed, batch_size=chunk)
        sensitivity.append({"batch": str(size), "n_samples": len(by), "lambda1": eig.eigenvalues[0],
                            "lambda2": eig.eigenvalues[1], "residual1": eig.residuals[0], "residual2": eig.residuals[1],
                            "converged": eig.converged, "certified_in": eig.certified_in, "guard": eig.guard,
                            "trace": tr.mean,
                            "trace_stderr": tr.stderr, "trace_samples": len(tr.samples),
                            "time_s": time.perf_counter() - t0})
    summary = {
        "hessian_batch_size": len(y),
        "top_eigenvalues": top.eigenvalues, "residuals": top.residuals, "n_hvps": top.n_hvps,
        "n_hvps_float64": top.n_hvps_float64, "converged": top.converged, "certified_in": top.certified_in,
        "guard": top.guard,
        "gap": top.eigenvalues[0] - top.eigenvalues[1],
        # the ratio is undefined unless lambda2 > 0
        "ratio": top.eigenvalues[0] / top.eigenvalues[1] if top.eigenvalues[1] > 0 else None,
        "pyhessian": {"eigenvalues": original.eigenvalues, "residuals": original.residuals,
                      "n_hvps": original.n_hvps, "converged": original.converged},
        "trace": {"mean": trace.mean, "stderr": trace.stderr, "n_samples": len(trace.samples)},
        "density_n_hvps": density.n_hvps,
        "full_data_top": None if outliers is None else {
            "n_samples": len(full_y), "eigenvalues": outliers.eigenvalues, "residuals": outliers.residuals,
            "converged": outliers.converged, "certified_in": outliers.certified_in, "n_hvps": outliers.n_hvps,
            "n_hvps_float64": outliers.n_hvps_float64, "guard": outliers.guard, "time_s": outliers_s,
            "n_hvps_replayed": journal.replayed,  # read back from the journal of a stopped attempt (in n_hvps)
            "n_outliers": subspace.count_outliers(outliers.eigenvalues),
            "outlier_rule": "the position of the largest ratio lambda_i / lambda_(i+1) among the top "
                            f"{n_top} positive eigenvalues (minima.subspace.count_outliers)"},
        "batch_sensitivity": sensitivity,
        # the whole analysis above (wall clock, replayed products at their cost when computed; not judged by compare)
        "time_s": journal.seconds(time.perf_counter() - started),
        # the code that did it: a resumed run's config.json records the commit that started the run
        "analysis_git_commit": runs.git_commit(),
        # the run's process so far, training included (Linux reports KiB); a machine fact, not judged by compare
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    lo, hi = float(density.nodes.min()), float(density.nodes.max())
    pad = 0.05 * (hi - lo) + 1e-6
    grid = np.linspace(lo - pad, hi + pad, 1000)
    runs.save_npz(Path(run_dir) / runs.DENSITY, nodes=density.nodes, weights=density.weights,
                     grid=grid, density=curvature.density_on_grid(density, grid))
    runs.save_json(Path(run_dir) / runs.CURVATURE, schema.CURVATURE.written(summary))
    return dict(summary, eigenvectors=top.eigenvectors)


def final_landscapes(model, data: Dataset, config, eigenvectors, run_dir) -> dict:
    """Loss along the top eigenvector(s) and filter-normalised random directions; writes landscape.npz."""
    seed, n, r = config["seed"], config["landscape"]["points"], config["landscape"]["radius"]
    x, y = hessian_batch(data, config["hessian"]["batch_size"], seed)
    alphas = np.linspace(-r, r, n)
    rand1 = landscape.filter_normalized_direction(model, seed=seed)
    rand2 = landscape.filter_normalized_direction(model, seed=seed + 10_000)
    out = {
        "alphas": alphas,
        "eig_1d": landscape.loss_along_line(model, CRITERION, x, y, eigenvectors[0], alphas),
        "eig_2d": landscape.loss_surface(model, CRITERION, x, y, eigenvectors[0], eigenvectors[1], alphas),
        "random_1d": landscape.loss_along_line(model, CRITERION, x, y, rand1, alphas),
        "random_2d": landscape.loss_surface(model, CRITERION, x, y, rand1, rand2, alphas),
    }
    runs.save_npz(Path(run_dir) / runs.LANDSCAPE, **out)
    return out
