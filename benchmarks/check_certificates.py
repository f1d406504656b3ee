"""Check every finished run's certified eigenvalues against an independent float64 reference.

    .venv/bin/python benchmarks/check_certificates.py [--results results] [--threads N]

For each complete run folder results/<optimizer>/seed<k>/ (one holding a file
named `done`), rebuild LeNet5 from its model.pt in float64, rebuild its Hessian
batch from config.json (data sizes, Hessian batch size, seed), and compute the
top eigenvalues by scipy's eigsh (ARPACK, which='LA', tol 1e-12) on plain
double-backward float64 Hessian-vector products: nothing of minima.curvature or
minima.krylov is used. Then compare with curvature.json's `top_eigenvalues`:
the i-th reported value against the i-th largest eigenvalue. `converged: true`
promises each within `tol` (config hessian.tol, relative), and the script
prints per run the largest relative error and whether that promise holds.

With --full-data, also the full training set's top eigenvalues (curvature.json's
`full_data_top`, solved in chunks and, since the mixed-precision path, by float32
Lanczos certified in float64) against eigsh on float64 products over the whole
training set, in chunks of 250 whose graphs are all kept (about 1 GiB for the
4,000 embedded digits; minutes per run, so meant for embedded runs).

Exit status: 0 if every converged claim holds, 1 if any converged eigenvalue is
off by more than its tol, 2 if some complete run could not be checked (and none
failed). A few seconds per run on a CPU (LeNet5, 100-sample Hessian batch).
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse.linalg as sla
import torch
import torch.nn.functional as F

import minima  # noqa: F401 - puts the repository root (cnn_architectures, params) on sys.path
from minima import training
from minima.data import hessian_batch, load_mnist

DATA_DIR = Path(minima.__file__).resolve().parents[1] / "data"
REF_TOL = 1e-12
FULL_DATA_CHUNK = 250  # --full-data: samples per kept float64 graph
EXTRA = 2  # eigenvalues beyond the reported ones: ARPACK converges the wanted ones faster with a margin


def complete_runs(results: Path):
    """(optimizer/seedK, folder) for every results/<optimizer>/seed<k>/ holding `done`, and the incomplete ones."""
    done, incomplete = [], []
    for folder in sorted(results.glob("*/seed*")):
        if folder.is_dir():
            (done if (folder / "done").is_file() else incomplete).append(folder)
    return done, incomplete


def float64_hvp(model, x, y, chunk=None):
    """A float64 copy's Hessian-vector product of the mean loss as a numpy matvec (one retained double-backward
    graph per chunk of `chunk` samples, all kept; one for the whole batch by default), and the copy's loss."""
    model = copy.deepcopy(model).double().eval()
    params = list(model.parameters())
    chunk = chunk or len(y)
    graphs, loss = [], 0.0
    for i in range(0, len(y), chunk):
        part = F.cross_entropy(model(x[i:i + chunk].double()), y[i:i + chunk]) * (len(y[i:i + chunk]) / len(y))
        graphs.append(torch.autograd.grad(part, params, create_graph=True))
        loss += float(part.detach())
    sizes = [p.numel() for p in params]

    def matvec(v):
        pieces = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).ravel()).split(sizes)
        vs = [c.view_as(p) for c, p in zip(pieces, params)]
        total = None
        for grads in graphs:
            hv = torch.cat([h.reshape(-1) for h in torch.autograd.grad(grads, params, vs, retain_graph=True)])
            total = hv if total is None else total + hv
        return total.numpy()

    return matvec, sum(sizes), loss


def reference_eigenvalues(matvec, n, k):
    op = sla.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)
    values = sla.eigsh(op, k=k, which="LA", tol=REF_TOL, ncv=max(30, 2 * k + 10), v0=v0)[0]
    return np.sort(values)[::-1]


def check(folder: Path, data_cache: dict, full_data=False) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    curv = json.loads((folder / "curvature.json").read_text())
    d, h = cfg["data"], cfg["hessian"]
    # the run's own data: the embedded digits, or (full size) the 60,000-image files under data/
    source, dataset = d.get("source") or "embedded", d.get("dataset", "mnist")
    key = (source, dataset, d["train_size"], d["test_size"], d["validation_size"])
    if key not in data_cache:
        data_cache[key] = load_mnist(source, DATA_DIR, dataset=dataset, train_size=d["train_size"],
                                     test_size=d["test_size"], validation_size=d["validation_size"], verbose=False)
    x, y = hessian_batch(data_cache[key], h["batch_size"], cfg["seed"])
    model = training.build_model(cfg["seed"])
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    matvec, n, loss = float64_hvp(model, x, y)
    reported = np.asarray(curv["top_eigenvalues"], dtype=float)
    exact = reference_eigenvalues(matvec, n, len(reported) + EXTRA)[:len(reported)]
    errors = np.abs(reported - exact) / np.abs(exact)
    converged, tol = bool(curv["converged"]), float(h["tol"])
    out = dict(loss=loss, k=len(reported), tol=tol, converged=converged, max_error=float(errors.max()),
               worst=int(errors.argmax()) + 1, holds=not converged or bool(np.all(errors <= tol)))
    top = curv.get("full_data_top")
    if full_data and top:
        fx, fy = hessian_batch(data_cache[key], "full", cfg["seed"])
        matvec, n, _ = float64_hvp(model, fx, fy, chunk=FULL_DATA_CHUNK)
        reported = np.asarray(top["eigenvalues"], dtype=float)
        exact = reference_eigenvalues(matvec, n, len(reported) + EXTRA)[:len(reported)]
        errors = np.abs(reported - exact) / np.abs(exact)
        out["full_data"] = dict(k=len(reported), max_error=float(errors.max()), worst=int(errors.argmax()) + 1,
                                holds=not top["converged"] or bool(np.all(errors <= tol)))
        out["holds"] = out["holds"] and out["full_data"]["holds"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="the results folder (default: results)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--full-data", action="store_true",
                        help="also the full training set's top eigenvalues (full_data_top; minutes per run)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = Path(args.results)
    runs, incomplete = complete_runs(results)
    print(f"{len(runs)} complete runs under {results}/"
          + (f"; skipped {len(incomplete)} without `done`: {', '.join(str(f.relative_to(results)) for f in incomplete)}"
             if incomplete else ""))
    if not runs:
        return 2
    print(f"{'run':<22} {'batch loss':>10} {'k':>2} {'tol':>7} {'converged':>9} {'max rel err':>11} "
          f"{'at':>3} {'claim':>6} {'time':>6}")
    failed, unchecked, data_cache = [], [], {}
    for folder in runs:
        name = str(folder.relative_to(results))
        t = time.perf_counter()
        try:
            r = check(folder, data_cache, args.full_data)
        except (OSError, KeyError, ValueError, RuntimeError) as e:  # a broken or foreign folder: say which, go on
            print(f"{name:<22} could not be checked: {type(e).__name__}: {e}")
            unchecked.append(name)
            continue
        claim = "holds" if r["holds"] else "FALSE"
        if not r["holds"]:
            failed.append(name)
        print(f"{name:<22} {r['loss']:10.2e} {r['k']:2d} {r['tol']:7.0e} {str(r['converged']):>9} "
              f"{r['max_error']:11.2e} {'l' + str(r['worst']):>3} {claim:>6} {time.perf_counter() - t:5.1f}s")
        if "full_data" in r:
            f = r["full_data"]
            print(f"{'  full training set':<22} {'':>10} {f['k']:2d} {r['tol']:7.0e} {'':>9} {f['max_error']:11.2e} "
                  f"{'l' + str(f['worst']):>3} {'holds' if f['holds'] else 'FALSE':>6}")
    print(f"\n{len(runs) - len(failed) - len(unchecked)} of {len(runs)} runs hold their certificate"
          + (f"; FALSE certificates (an eigenvalue claimed converged is off by more than tol): {', '.join(failed)}"
             if failed else "")
          + (f"; not checked: {', '.join(unchecked)}" if unchecked else ""))
    return 1 if failed else 2 if unchecked else 0


if __name__ == "__main__":
    sys.exit(main())
