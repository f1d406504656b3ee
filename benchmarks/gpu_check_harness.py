"""The machinery of benchmarks/gpu_check.py (a check's steps timed and recorded, its summary, subprocesses)
and its in-process steps: the environment, curvature on the device, LeNet5's fast path.

Kept apart from the subprocess steps and the command line so that each file reads on its own.
"""

import copy
import datetime
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # params, cnn_architectures and minima, also where minima is not pip-installed

CPU_MESSAGE = "no CUDA device: CPU dry run of the same steps at smoke size"
# wall-time budget: on CUDA the "under 5 minutes of device time", less interpreter start and slack;
# on CPU only a guard against a hang: a shared 2-core machine under others' load took 10x its idle time
BUDGET_S = {"cuda": 270, "cpu": 900}
MIN_SUBPROCESS_S = 15   # a subprocess step with less budget left than this is skipped: it would only time out
ADAHESSIAN_VS_SGD = 2.0  # AdaHessian's run estimated at this many SGD runs (1.7x on 2 CPU cores in results/)
EIG_TOL = 1e-4          # the relative accuracy top_eigenpairs promises, checked against the dense spectrum
LANDSCAPE_SAMPLES = 100  # the study's landscape batch
LANDSCAPE_POINTS = {"cuda": 41, "cpu": 5}   # grid points per axis: the study's 41, or smoke size
LENET_TIMED_STEPS = {"cuda": 200, "cpu": 20}  # forward + backward passes timed per LeNet5 path
# modules the study imports somewhere on the way through `python -m minima run` and the tests
# (submitit is for sweeps only); the device's image lacks several, which then travel as wheels
REQUIRED_MODULES = ("torch", "torchvision", "numpy", "pandas", "matplotlib", "tqdm", "pyhessian", "torch_optimizer",
                    "pytorch_optimizer", "mlxtend", "papermill", "jupytext", "jupyter_client", "ipykernel",
                    "nbformat", "traitlets", "psutil", "pytest")
ALWAYS_TESTED = ("tests/test_curvature.py", "tests/test_curvature_spectrum.py", "tests/test_landscape.py")
# the runner's report of one run: "[sgd seed 0] done (11 s)", with " -> <run folder>" when runs go in parallel
RUN_LINE = re.compile(r"^\[(?P<optimizer>\S+) seed (?P<seed>\d+)\] (?P<outcome>.+?) \((?P<seconds>\d+) s\)( -> .*)?$")


# ----------------------------------------------------------------------------- the step machinery

class Check:
    """Runs steps in order, times each, keeps going after a failure, and rewrites the summary after each."""

    def __init__(self, out: Path, work: Path, budget_s: float, device: torch.device):
        self.out, self.work, self.budget_s, self.device = out, work, budget_s, device
        self.cuda = device.type == "cuda"
        self.t0 = time.perf_counter()
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.steps, self.notes, self.environment = [], [], {}
        (out / "logs").mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def step(self, name, fn, *args):
        """Run fn(*args) -> details; its "problems" list fails the step, its "skipped" reason skips it."""
        t = time.perf_counter()
        try:
            details = fn(*args) or {}
        except Exception as e:  # noqa: BLE001 - any error is this step's failure, and the next step still runs
            details = {"problems": [f"{type(e).__name__}: {e}"],
                       "traceback": traceback.format_exc().strip().splitlines()[-8:]}
        seconds = time.perf_counter() - t
        problems = details.get("problems") or []
        status = "failed" if problems else "skipped" if details.get("skipped") else "passed"
        line = "; ".join(problems) if problems else details.get("skipped") or details.get("summary", "")
        self.steps.append({"name": name, "status": status, "passed": {"passed": True, "failed": False}.get(status),
                           "seconds": round(seconds, 2), "summary": line, "details": details})
        print(f"[{status:>7}] {name:<16} {seconds:6.1f} s  {line}", flush=True)
        self.write(complete=False)
        return details

    def failed(self) -> list[str]:
        return [s["name"] for s in self.steps if s["status"] == "failed"]

    def timings(self) -> dict:
        return {f"{s['name']}.{k}": v for s in self.steps for k, v in s["details"].get("timings", {}).items()}

    def summary(self, complete: bool) -> dict:
        return {"mode": "cuda" if self.cuda else "cpu dry run", "complete": complete, "date": self.started,
                "device": self.environment.get("device", {}), "versions": self.environment.get("versions", {}),
                "budget_s": self.budget_s, "total_s": round(self.elapsed(), 1), "passed": not self.failed(),
                "failed_steps": self.failed(), "work_dir": str(self.work), "notes": self.notes,
                "steps": self.steps, "timings": self.timings()}

    def write(self, complete: bool) -> None:
        summary = self.summary(complete)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        (self.out / "summary.md").write_text(markdown(summary))


def markdown(s: dict) -> str:
    device = s["device"]
    result = "all steps passed" if s["passed"] else "FAILED: " + ", ".join(s["failed_steps"])
    lines = [f"# GPU check: {device.get('name', '?')}", "",
             f"{s['date']}, {s['mode']}, {s['total_s']} s of a {s['budget_s']:.0f} s budget"
             f"{'' if s['complete'] else ' (incomplete: stopped before the end)'}: {result}.", "",
             "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in {**device, **s["versions"]}.items()]
    lines += ["", "## Steps", "", "| step | result | seconds | what |", "| --- | --- | ---: | --- |"]
    lines += [f"| {st['name']} | {st['status']} | {st['seconds']:.1f} | {st['summary'].replace('|', '/')} |"
              for st in s["steps"]]
    lines += ["", "## Timings", "", "| timing | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in s["timings"].items()]
    if s["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in s["notes"]]
    return "\n".join(lines) + "\n"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def subprocess_env() -> dict:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    # the notebooks' kernels start in notebooks/: the repository root on PYTHONPATH lets them import
    # minima where it is not pip-installed (the device machine runs its own python3, not .venv)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def run_logged(cmd, log: Path, timeout_s: float) -> tuple[int | None, str, float]:
    """Run cmd from the repository root, output into log; returns (exit status or None on timeout, output, s).

    A run's notebook kernel starts in a session of its own, and papermill has been
    seen to wait forever on a kernel that died; so on timeout every descendant
    of the command, collected by pid before any is killed, goes with it.
    """
    import psutil

    t = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + " ".join(str(c) for c in cmd) + "\n")
        f.flush()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=subprocess_env(),
                                stdout=f, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            tree = [proc] + psutil.Process(proc.pid).children(recursive=True)
            for p in tree:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            proc.wait()
            rc = None
    return rc, log.read_text(), time.perf_counter() - t


def budget_for(check: Check, what: str) -> tuple[float | None, dict | None]:
    """(timeout, None), or (None, a skip) when the budget left cannot hold a subprocess step."""
    left = check.remaining()
    if left < MIN_SUBPROCESS_S:
        return None, {"skipped": f"budget spent: {left:.0f} s left of {check.budget_s:.0f} s, not enough for {what}"}
    return left, None


# ----------------------------------------------------------------------------- steps

def step_environment(check: Check) -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda": torch.version.cuda or "none", "cudnn": str(torch.backends.cudnn.version() or "none")}
    dist_of = importlib.metadata.packages_distributions()
    missing, packages = [], {}
    for module in REQUIRED_MODULES:
        if importlib.util.find_spec(module) is None:
            missing.append(module)
            continue
        for dist in dist_of.get(module, [])[:1]:
            packages[dist] = importlib.metadata.version(dist)
    device = {"name": platform.processor() or platform.machine(), "type": check.device.type}
    if check.cuda:
        props = torch.cuda.get_device_properties(check.device)
        device.update(name=props.name, capability=f"{props.major}.{props.minor}",
                      memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                      devices=torch.cuda.device_count(),
                      tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
        try:  # torch does not say which driver it runs on; nvidia-smi does
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            versions["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else "unknown"
        except (OSError, subprocess.SubprocessError, IndexError):
            versions["driver"] = "unknown"
    device.update(cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), platform=platform.platform())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        versions["git_commit"] = commit.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        versions["git_commit"] = "unknown"  # a copy of the tree without .git, or no git there
    check.environment = {"versions": versions, "device": device}
    pinned = re.search(r"^torch==(\S+)", (REPO / "requirements.txt").read_text(), re.M)
    if pinned and not torch.__version__.startswith(pinned.group(1)):
        check.notes.append(f"torch {torch.__version__} here, requirements.txt pins {pinned.group(1)}: "
                           "timings and last digits may differ from the committed study")
    details = {"versions": versions, "device": device, "packages": packages,
               "summary": f"{device['name']}, torch {versions['torch']}, CUDA {versions['cuda']}, "
                          f"python {versions['python']}"}
    if missing:
        details["problems"] = [f"missing modules: {', '.join(missing)} (carry them as wheels)"]
    return details


def _mlp_and_batch(device):
    """An 8 -> 16 -> 4 tanh MLP in float64 (212 parameters: its dense Hessian is instant) and 40 points."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    x = torch.randn(40, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (40,), generator=g)
    return model.to(device), x.to(device), y.to(device)


def _dense_hessian(model, criterion, x, y):
    names, shapes = zip(*[(n, p.shape) for n, p in model.named_parameters()])
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(v):
        pieces = torch.split(v, [s.numel() for s in shapes])
        return criterion(functional_call(model, {n: t.view(s) for n, t, s in zip(names, pieces, shapes)}, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def step_curvature(check: Check) -> dict:
    from minima.curvature import top_eigenpairs

    device, criterion = check.device, nn.CrossEntropyLoss()
    model, x, y = _mlp_and_batch(device)
    exact = torch.linalg.eigvalsh(_dense_hessian(model, criterion, x, y)).flip(0)[:2].cpu().numpy()

    # a caller's state as a training loop leaves it: mixed train/eval flags, one .grad set, the others None
    model.train()
    model[1].eval()
    params = list(model.parameters())
    params[0].grad = torch.full_like(params[0], 0.25)
    grads = [p.grad for p in params]
    grad_values = [None if g is None else g.clone() for g in grads]
    modes = [m.training for m in model.modules()]
    torch.randn(3, device=device)  # CUDA's generator initialised before the snapshot, as in a training run
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if check.cuda else []

    sync(device)
    t = time.perf_counter()
    result = top_eigenpairs(model, criterion, x, y, k=2, tol=EIG_TOL)
    sync(device)
    seconds = time.perf_counter() - t

    found = np.asarray(result.eigenvalues, dtype=np.float64)
    errors = np.abs(found - exact) / np.abs(exact)
    problems = []
    if not result.converged:
        problems.append("top_eigenpairs did not report converged")
    if not np.all(errors <= EIG_TOL):
        problems.append(f"eigenvalues {found.tolist()} vs dense {exact.tolist()}: relative errors {errors.tolist()}")
    if any(p.grad is not g for p, g in zip(params, grads)) or any(
            v is not None and not torch.equal(p.grad, v) for p, v in zip(params, grad_values)):
        problems.append(".grad changed")
    if [m.training for m in model.modules()] != modes:
        problems.append("train/eval flags changed")
    if not torch.equal(torch.get_rng_state(), cpu_rng):
        problems.append("torch CPU RNG state changed")
    if check.cuda and not all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda_rng)):
        problems.append("torch CUDA RNG state changed")
    return {"eigenvalues": found.tolist(), "dense": exact.tolist(), "relative_errors": errors.tolist(),
            "converged": bool(result.converged), "state_checked": ["grad", "train/eval", "cpu rng"]
            + (["cuda rng (all devices)"] if check.cuda else []), "problems": problems,
            "timings": {"top_eigenpairs_s": round(seconds, 3)},
            "summary": f"lambda1,2 = {found[0]:.6g}, {found[1]:.6g}; max relative error {errors.max():.1e}; "
                       f"state untouched on {device.type}"}


def _time_steps(model, x, y, n, device) -> float:
    """ms per forward + backward of cross-entropy, after a few warm-up passes (kernels picked, caches warm)."""
    for i in range(5 + n):
        if i == 5:
            sync(device)
            t = time.perf_counter()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    sync(device)
    return 1000 * (time.perf_counter() - t) / n


def step_lenet5_fast(check: Check) -> dict:
    from cnn_architectures import LeNet5, fast_forward

    device = check.device
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = LeNet5(10).to(device)
    x = torch.rand(100, 1, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (100,), generator=g).to(device)
    problems = []
    if not model.fast or not torch.equal(model(x), fast_forward(model, x)):
        problems.append("LeNet5(10) does not take the fast path by default")

    # Same function: in float64 the two paths agree to rounding, whatever the device's float32 kernels
    # (TF32 convolutions on Ampere and later) do to each.
    m64, x64 = copy.deepcopy(model).double(), x.double()
    m64.fast = False
    plain = m64(x64)
    F.cross_entropy(plain, y).backward()
    g_plain = [p.grad.clone() for p in m64.parameters()]
    m64.zero_grad(set_to_none=True)
    fast = fast_forward(m64, x64)
    F.cross_entropy(fast, y).backward()
    logit_err = (fast - plain).abs().max().item()
    grad_err = max((p.grad - q).abs().max().item() for p, q in zip(m64.parameters(), g_plain))
    if logit_err > 1e-10 or grad_err > 1e-10:
        problems.append(f"float64 fast vs plain: logits differ by {logit_err:.1e}, gradients by {grad_err:.1e}")
    model.fast = False
    f32_plain = model(x)
    model.fast = True
    f32_err = (model(x) - f32_plain).abs().max().item()  # recorded, not judged: it depends on the device's kernels

    n = LENET_TIMED_STEPS[device.type]
    ms_fast = _time_steps(model, x, y, n, device)
    model.fast = False
    ms_plain = _time_steps(model, x, y, n, device)
    model.fast = True
    return {"float64_logit_error": logit_err, "float64_grad_error": grad_err, "float32_logit_difference": f32_err,
            "problems": problems,
            "timings": {"fast_ms_per_step": round(ms_fast, 3), "plain_ms_per_step": round(ms_plain, 3)},
            "summary": f"same function (float64 error {max(logit_err, grad_err):.0e}); forward+backward at batch "
                       f"100: fast {ms_fast:.2f} ms, plain {ms_plain:.2f} ms (plain / fast {ms_plain / ms_fast:.2f}x)"}
