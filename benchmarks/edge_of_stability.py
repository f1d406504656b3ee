"""The edge of stability, reproduced as a check of the curvature instruments (curvature.top_eigenpairs,
preconditioning.preconditioner and preconditioning.stability_threshold).

Run from the repository root:  python benchmarks/edge_of_stability.py [--threads 1] [--help for the sizes]
Writes results/edge_of_stability/{gd,adam}.csv and summary.json, and report/figures/edge_of_stability.{png,pdf}.
--replot recomputes the statistics and redraws the figure from those CSVs without training.

The known result. Full-batch gradient descent with step size eta is stable on a quadratic with Hessian H
exactly while lambda_1(H) < 2/eta. Cohen et al. 2021 ("Gradient descent on neural networks typically
occurs at the edge of stability", ICLR 2021, arXiv:2103.00065) found that on neural networks lambda_1
first rises ("progressive sharpening") until it reaches 2/eta and then hovers there while the loss keeps
falling, non-monotonically. Cohen et al. 2022 ("Adaptive gradient methods at the edge of stability",
arXiv:2207.14484) found the same for full-batch Adam, theta <- theta - eta P^-1 m, with the
preconditioned sharpness lambda_1(P^-1 H) in place of lambda_1(H) and the threshold of Adam's momentum,
(2 + 2 beta1)/((1 - beta1) eta) = 38/eta at beta1 = 0.9 (derived in minima/preconditioning.py), while
the raw lambda_1(H) is free to keep changing because P adapts.

The two parts, on the same data, loss and initial weights (seed 0):
  1. GD: torch.optim.SGD, eta = 0.2, no momentum: lambda_1(H) against 2/eta over 1,000 steps.
  2. Adam: torch.optim.Adam, eta = 2e-4, betas (0.9, 0.999), eps = 1e-7: lambda_1(P^-1 H) against 38/eta
     over 2,000 steps, and lambda_1(H) beside it.
Data: a class-balanced 1,000-image subset of the embedded digits (minima.data.load_mnist, 100 per class).
Loss: the squared loss on one-hot targets, L = (1/N) sum_n 0.5 ||f(x_n) - e_{y_n}||^2 (summed over the ten
classes, averaged over the images), the same criterion for the steps and for the Hessian: a different
constant factor would scale lambda_1 but not the threshold.

Measurement at step s (after s steps): the loss and accuracy at theta_s, lambda_1(H(theta_s)) and, for
Adam, lambda_1 of P_s^-1 H(theta_s) with P_s = preconditioning.preconditioner(adam) the preconditioner of
the step just taken (Adam has none before its first step, so its measurements start at step `every`).
Each eigenvalue is warm-started from the previous measurement's eigenvector and computed on the model's
float32 HVPs (precision="model"): on LeNet5 at this size a float64 solve costs ~3x as much, and the
squared loss has none of the softmax cancellation that made float64 necessary for cross-entropy near
zero loss. The certificate then holds for the float32 operator; a cold float64 solve at the final
weights (tol 1e-6) checks how far that is from the float64 Hessian's lambda_1 (summary.json "check").

Plateau statistics: r = lambda_1 / threshold (lambda_1 eta / 2 for GD) over the measurements in the last
half of the steps, and over those from the first with r >= 0.9 on: median, 10th and 90th percentile, min
and max. The plateau counts as reproduced when the last half's median lies within PLATEAU_BAND, fixed
before the run. For Adam the same statistics of the raw lambda_1(H) say how far it moves meanwhile.
"""

import argparse
import csv
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # headless: the script writes files, it never shows a window

import numpy as np
import torch
import torch.nn.functional as F

import minima  # noqa: F401 - puts the repository root (cnn_architectures, params) on sys.path
from cnn_architectures import LeNet5
from minima import curvature, preconditioning
from minima.data import load_mnist

REPO = Path(__file__).resolve().parents[1]
PLATEAU_BAND = (0.85, 1.15)   # median lambda_1/threshold over the last half counts as "at the threshold"
CHECK_TOL = 1e-6              # the final cold float64 solve
SOURCES = ("minima/curvature.py", "minima/krylov.py", "minima/preconditioning.py")  # hashed into the summary
GD_COLUMNS = ["step", "train_loss", "train_acc", "lambda1", "threshold", "ratio", "converged", "n_hvps",
              "measure_s", "wall_s"]
ADAM_COLUMNS = ["step", "train_loss", "train_acc", "lambda1_precond", "threshold", "ratio", "converged_precond",
                "n_hvps_precond", "lambda1_raw", "converged_raw", "n_hvps_raw", "measure_s", "wall_s"]


def squared_loss(outputs, targets):
    """0.5 ||f(x) - e_y||^2 summed over classes, averaged over samples (targets one-hot floats)."""
    return 0.5 * (outputs - targets).pow(2).sum(1).mean()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=1000, help="class-balanced training subset (default 1000)")
    p.add_argument("--gd-lr", type=float, default=0.2)
    p.add_argument("--gd-steps", type=int, default=1000)
    p.add_argument("--gd-every", type=int, default=10, help="measure lambda_1 every this many GD steps")
    p.add_argument("--adam-lr", type=float, default=2e-4)
    p.add_argument("--adam-steps", type=int, default=2000)
    p.add_argument("--adam-every", type=int, default=20, help="measure every this many Adam steps")
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--eps", type=float, default=1e-7)
    p.add_argument("--tol", type=float, default=1e-4, help="relative accuracy asked of each eigenvalue")
    p.add_argument("--precision", default="model", choices=curvature.PRECISIONS)
    p.add_argument("--max-hvps", type=int, default=500, help="cap on HVPs per eigenvalue")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--no-check", action="store_true", help="skip the final cold float64 solves")
    p.add_argument("--replot", action="store_true",
                   help="train nothing: recompute the statistics and redraw the figure from the CSVs in --out-dir, "
                        "keeping the run's settings, versions, wall times and checks in its summary.json")
    p.add_argument("--out-dir", default=str(REPO / "results" / "edge_of_stability"))
    p.add_argument("--figure-dir", default=str(REPO / "report" / "figures"))
    return p.parse_args(argv)


def measurement_steps(steps, every, first):
    """first, first + every, ... and always the last step, so the final weights are measured."""
    out = list(range(first, steps + 1, every))
    return out if out and out[-1] == steps else out + [steps]


def train_and_measure(name, build_optimizer, x, onehot, labels, args, steps, every, preconditioned):
    """Full-batch steps with lambda_1 measured every `every` steps; returns (rows, model, optimizer, diverged)."""
    torch.manual_seed(args.seed)  # the same initial weights for both parts
    model = LeNet5()
    opt = build_optimizer(model.parameters())
    threshold = preconditioning.stability_threshold(opt)
    # Adam has no preconditioner before its first step, so its first measurement is after `every` steps
    todo = set(measurement_steps(steps, every, every if preconditioned else 0))
    rows, init_raw, init_pre, diverged, start = [], None, None, None, time.perf_counter()
    for s in range(steps + 1):
        if s in todo:
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model(x)
                loss, acc = float(squared_loss(out, onehot)), float((out.argmax(1) == labels).float().mean())
            solve = dict(k=1, tol=args.tol, precision=args.precision, max_hvps=args.max_hvps, seed=args.seed)
            raw = curvature.top_eigenpairs(model, squared_loss, x, onehot, init=init_raw, **solve)
            init_raw = raw.eigenvectors
            row = {"step": s, "train_loss": loss, "train_acc": acc}
            if preconditioned:
                pre = curvature.top_eigenpairs(model, squared_loss, x, onehot, init=init_pre,
                                               preconditioner=preconditioning.preconditioner(opt), **solve)
                init_pre = pre.eigenvectors
                row.update(lambda1_precond=pre.eigenvalues[0], threshold=threshold,
                           ratio=pre.eigenvalues[0] / threshold, converged_precond=pre.converged,
                           n_hvps_precond=pre.n_hvps, lambda1_raw=raw.eigenvalues[0], converged_raw=raw.converged,
                           n_hvps_raw=raw.n_hvps)
            else:
                row.update(lambda1=raw.eigenvalues[0], threshold=threshold, ratio=raw.eigenvalues[0] / threshold,
                           converged=raw.converged, n_hvps=raw.n_hvps)
            row.update(measure_s=time.perf_counter() - t0, wall_s=time.perf_counter() - start)
            rows.append(row)
            print(f"{name} step {s:5d}  loss {loss:.5f}  acc {acc:.3f}  ratio {row['ratio']:.4f}"
                  + (f"  raw lambda1 {row['lambda1_raw']:.3f}" if preconditioned else f"  lambda1 {row['lambda1']:.4f}")
                  + f"  ({row['wall_s']:.0f} s)", flush=True)
        if s == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss = squared_loss(model(x), onehot)
        if not torch.isfinite(loss):
            diverged = s  # nothing after a non-finite loss means anything; stop and say so
            print(f"{name}: non-finite loss at step {s}; stopping", flush=True)
            break
        loss.backward()
        opt.step()
    return rows, model, opt, diverged


def spread(rows, key, first_step):
    """Statistics of rows[key] over the measurements from `first_step` on."""
    kept = [r for r in rows if r["step"] >= first_step]
    v = np.array([r[key] for r in kept], dtype=float)
    if len(v) == 0:
        return {"n": 0}
    return {"n": len(v), "from_step": kept[0]["step"], "median": float(np.median(v)),
            "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90)),
            "min": float(v.min()), "max": float(v.max()), "max_over_min": float(v.max() / v.min()),
            "first": float(v[0]), "last": float(v[-1])}


def part_summary(rows, steps, diverged, converged_key):
    """The plateau statistics of one part: r = lambda_1/threshold over the last half of the steps, and from
    the first measurement with r >= 0.9 on (when the threshold was reached)."""
    last_half = spread(rows, "ratio", steps / 2)
    reached = next((r["step"] for r in rows if r["ratio"] >= 0.9), None)
    return {"n_measurements": len(rows), "n_converged": sum(bool(r[converged_key]) for r in rows),
            "diverged_at_step": diverged, "ratio_first": rows[0]["ratio"] if rows else None,
            "ratio_max": max(r["ratio"] for r in rows) if rows else None,
            "first_step_ratio_ge_0.9": reached, "ratio_last_half": last_half,
            "ratio_after_reaching": spread(rows, "ratio", reached) if reached is not None else {"n": 0},
            "final_train_loss": rows[-1]["train_loss"] if rows else None,
            "final_train_acc": rows[-1]["train_acc"] if rows else None,
            "plateau_band": list(PLATEAU_BAND),
            "reproduced": bool(last_half["n"] and PLATEAU_BAND[0] <= last_half["median"] <= PLATEAU_BAND[1])}


def statistics(gd, adam, args, gd_diverged=None, adam_diverged=None):
    """Both parts' statistics, a function of the rows alone (so --replot recomputes them from the CSVs)."""
    summary_gd = part_summary(gd, args.gd_steps, gd_diverged, "converged")
    summary_adam = part_summary(adam, args.adam_steps, adam_diverged, "converged_precond")
    summary_adam["n_converged_raw"] = sum(bool(r["converged_raw"]) for r in adam)
    # does lambda_1(H) move while lambda_1(P^-1 H) is held at the threshold? over the last half, and from reaching
    summary_adam["raw_lambda1_last_half"] = spread(adam, "lambda1_raw", args.adam_steps / 2)
    reached = summary_adam["first_step_ratio_ge_0.9"]
    if reached is not None:
        after = [r for r in adam if r["step"] >= reached]
        peak = max(after, key=lambda r: r["lambda1_raw"])
        summary_adam["raw_lambda1_after_reaching"] = {
            **spread(adam, "lambda1_raw", reached), "max_step": peak["step"],
            "max_over_first": peak["lambda1_raw"] / after[0]["lambda1_raw"],
            "last_over_max": after[-1]["lambda1_raw"] / peak["lambda1_raw"]}
    return summary_gd, summary_adam


def final_check(model, x, onehot, tracked, preconditioner=None):
    """A cold float64 solve at the final weights against the last warm-started float32 value."""
    r = curvature.top_eigenpairs(model, squared_loss, x, onehot, k=1, tol=CHECK_TOL, precision="float64",
                                 max_hvps=1000, preconditioner=preconditioner)
    return {"tracked": tracked, "float64_cold": r.eigenvalues[0], "rel_diff": abs(tracked / r.eigenvalues[0] - 1),
            "converged": r.converged, "n_hvps": r.n_hvps, "tol": CHECK_TOL}


def write_csv(path, rows, columns):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in r.items()})


def provenance():
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    # the instruments may be uncommitted work in progress: their hashes say which code measured
    hashes = {s: hashlib.sha256((REPO / s).read_bytes()).hexdigest() for s in SOURCES if (REPO / s).exists()}
    status = git("status", "--porcelain", "--", *SOURCES)
    return {"git_commit": git("rev-parse", "HEAD"), "instruments_uncommitted_changes": bool(status),
            "sha256": hashes, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "pyhessian": version("pyhessian"), "matplotlib": version("matplotlib"),
            "platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def figure(gd, adam, gd_lr, adam_lr, figure_dir):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)

    def with_loss(ax, rows):
        twin = ax.twinx()
        twin.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], color="0.6", lw=1, label="train loss")
        twin.set_yscale("log")
        twin.set_ylabel("train loss (squared, one-hot)", color="0.4")
        return twin

    ax = axes[0]
    ax.plot([r["step"] for r in gd], [r["lambda1"] for r in gd], "C0.-", ms=3, lw=1, label=r"$\lambda_1(H)$")
    ax.axhline(gd[0]["threshold"], color="k", ls="--", lw=1, label=rf"$2/\eta$ = {gd[0]['threshold']:g}")
    ax.set(title=f"GD, $\\eta$ = {gd_lr:g}", xlabel="step", ylabel="sharpness")
    lines = ax.get_legend_handles_labels()
    twin = with_loss(ax, gd)
    ax.legend(lines[0] + twin.get_legend_handles_labels()[0], lines[1] + ["train loss"], loc="center right")

    ax = axes[1]
    ax.plot([r["step"] for r in adam], [r["lambda1_precond"] for r in adam], "C1.-", ms=3, lw=1,
            label=r"$\lambda_1(P^{-1}H)$")
    ax.axhline(adam[0]["threshold"], color="k", ls="--", lw=1, label=rf"$38/\eta$ = {adam[0]['threshold']:.3g}")
    ax.set_yscale("log")  # it rises over orders of magnitude before it can plateau
    ax.set(title=f"Adam, $\\eta$ = {adam_lr:g}: preconditioned", xlabel="step", ylabel="preconditioned sharpness")
    lines = ax.get_legend_handles_labels()
    twin = with_loss(ax, adam)
    ax.legend(lines[0] + twin.get_legend_handles_labels()[0], lines[1] + ["train loss"], loc="center right")

    ax = axes[2]
    ax.plot([r["step"] for r in adam], [r["lambda1_raw"] for r in adam], "C2.-", ms=3, lw=1, label=r"$\lambda_1(H)$")
    ax.set(title="Adam: raw sharpness", xlabel="step", ylabel="sharpness")
    ax.legend(loc="lower right")

    figure_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        fig.savefig(figure_dir / f"edge_of_stability.{ext}", dpi=150)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.replot:
        return replot(args)
    torch.set_num_threads(args.threads)
    out_dir, figure_dir = Path(args.out_dir), Path(args.figure_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    versions = provenance()  # before training: the code that is about to run, not what the tree holds at the end

    data = load_mnist("embedded", train_size=args.n_images, verbose=False)
    x, labels = data.x_train, data.y_train
    onehot = F.one_hot(labels, 10).to(x.dtype)
    print(f"{len(labels)} images, per class {torch.bincount(labels, minlength=10).tolist()}; "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads", flush=True)

    gd, gd_model, _, gd_diverged = train_and_measure(
        "gd", lambda ps: torch.optim.SGD(ps, lr=args.gd_lr), x, onehot, labels, args,
        args.gd_steps, args.gd_every, preconditioned=False)
    gd_s = time.perf_counter() - start
    adam, adam_model, adam_opt, adam_diverged = train_and_measure(
        "adam", lambda ps: torch.optim.Adam(ps, lr=args.adam_lr, betas=(args.beta1, args.beta2), eps=args.eps),
        x, onehot, labels, args, args.adam_steps, args.adam_every, preconditioned=True)
    adam_s = time.perf_counter() - start - gd_s
    write_csv(out_dir / "gd.csv", gd, GD_COLUMNS)
    write_csv(out_dir / "adam.csv", adam, ADAM_COLUMNS)
    summary_gd, summary_adam = statistics(gd, adam, args, gd_diverged, adam_diverged)
    check_s = 0.0
    if not args.no_check:
        t0 = time.perf_counter()
        # valid only when the last row is the final weights, which it is unless a run diverged
        if gd_diverged is None:
            summary_gd["check"] = final_check(gd_model, x, onehot, gd[-1]["lambda1"])
        if adam_diverged is None:
            summary_adam["check_raw"] = final_check(adam_model, x, onehot, adam[-1]["lambda1_raw"])
            summary_adam["check_precond"] = final_check(adam_model, x, onehot, adam[-1]["lambda1_precond"],
                                                        preconditioning.preconditioner(adam_opt))
        check_s = time.perf_counter() - t0

    summary = {
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("out_dir", "figure_dir")},
                     "data": data.description, "n_per_class": torch.bincount(labels, minlength=10).tolist(),
                     "loss": "0.5 * sum over the 10 classes of (logit - onehot)^2, mean over images",
                     "model": "LeNet5 (tanh), cnn_architectures.LeNet5, torch.manual_seed(seed) before each part",
                     "gd_threshold": gd[0]["threshold"] if gd else None,
                     "adam_threshold": adam[0]["threshold"] if adam else None,
                     "ratio": "lambda1 / threshold (Adam: lambda1(P^-1 H) / threshold)",
                     "ratio_last_half": "over the measurements with step >= steps/2",
                     "ratio_after_reaching": "over the measurements from the first with ratio >= 0.9 on"},
        "versions": versions,
        "wall_s": {"gd": gd_s, "adam": adam_s, "check": check_s, "total": time.perf_counter() - start},
        "statistics_from": "the run",
        "gd": summary_gd,
        "adam": summary_adam,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    if gd and adam:
        figure(gd, adam, args.gd_lr, args.adam_lr, figure_dir)
    summary["wall_s"]["total"] = time.perf_counter() - start  # the figure included
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    print_verdicts(summary)
    print(f"wall time {summary['wall_s']['total']:.0f} s; wrote {out_dir} and {figure_dir / 'edge_of_stability.png'}")
    return 0


def print_verdicts(summary):
    for name in ("gd", "adam"):
        part = summary[name]
        h = part["ratio_last_half"]
        if h["n"]:
            print(f"{name}: lambda1/threshold over the last half: median {h['median']:.4f}, "
                  f"range {h['min']:.4f} to {h['max']:.4f}; reproduced: {part['reproduced']}")


def read_csv(path):
    """Rows as written by write_csv, with their types back."""
    ints = {"step", "n_hvps", "n_hvps_precond", "n_hvps_raw"}
    bools = {"converged", "converged_precond", "converged_raw"}
    with open(path, newline="") as f:
        return [{k: int(v) if k in ints else (v == "True") if k in bools else float(v) for k, v in r.items()}
                for r in csv.DictReader(f)]


def replot(args):
    """Statistics and figure again from a finished run's CSVs: restyling needs no new run."""
    out_dir, figure_dir = Path(args.out_dir), Path(args.figure_dir)
    summary = json.loads((out_dir / "summary.json").read_text())
    run = argparse.Namespace(**summary["settings"])  # the run's steps and step sizes, not this call's flags
    gd, adam = read_csv(out_dir / "gd.csv"), read_csv(out_dir / "adam.csv")
    fresh = statistics(gd, adam, run, summary["gd"].get("diverged_at_step"), summary["adam"].get("diverged_at_step"))
    for name, stats in zip(("gd", "adam"), fresh):
        # the checks were computed on the final weights, which the CSVs do not hold: keep them
        kept = {k: v for k, v in summary[name].items() if k.startswith("check")}
        summary[name] = {**stats, **kept}
    summary["statistics_from"] = "the CSVs (--replot)"
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    figure(gd, adam, run.gd_lr, run.adam_lr, figure_dir)
    print_verdicts(summary)
    print(f"recomputed {out_dir / 'summary.json'}; redrew {figure_dir / 'edge_of_stability.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
