"""The optimizer registry (SAM, a throwaway optimizer registered from outside) and the run folder's owner:
the lock, file modes, a corrupted checkpoint."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import helpers
from minima import optimizers, runs, training
from minima.lock import RunLock

ROOT = Path(__file__).resolve().parents[1]


def _python(*args, env=None, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "MPLBACKEND": "Agg", **(env or {})}, **kw)


# ---------------------------------------------------------------------------- SAM

def test_sam_step_is_the_two_pass_update(tmp_path):
    """Our SAM step against SAM's update written out: w <- w - lr * grad L(w + rho g / ||g||), g = grad L(w)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    lr, rho = 0.1, 0.05
    w = [p.detach().clone() for p in model.parameters()]
    opt = optimizers.make_optimizer("sam", model, {"lr": lr, "rho": rho})
    for _ in range(3):
        # by hand, from the current weights
        params = [p.detach().clone().requires_grad_() for p in w]
        def loss_at(ps):
            return F.cross_entropy(torch.func.functional_call(model, dict(zip(
                [n for n, _ in model.named_parameters()], ps)), (x,)), y)
        g = torch.autograd.grad(loss_at(params), params)
        norm = torch.sqrt(sum((t ** 2).sum() for t in g))
        perturbed = [(p + rho * t / norm).detach().requires_grad_() for p, t in zip(params, g)]
        g2 = torch.autograd.grad(loss_at(perturbed), perturbed)
        w = [p.detach() - lr * t for p, t in zip(params, g2)]
        loss = training.training_step(model, opt, x, y, name="sam", loss_fn=lambda m, a, b: F.cross_entropy(m(a), b))
        assert torch.isfinite(loss)
        for p, expected in zip(model.parameters(), w):  # pytorch_optimizer takes ||g|| in float32
            assert torch.allclose(p.detach(), expected, rtol=1e-6, atol=1e-9)


def test_registry_entries_name_label_and_step():
    for name in ("sgd", "adam", "adagrad", "adahessian", "sam"):
        entry = optimizers.get(name)
        assert entry.name == name and entry.label and entry.description and entry.defaults["lr"] > 0
    assert optimizers.get("adahessian").step is optimizers.second_order_step
    assert optimizers.get("sam").step is optimizers.sam_step
    with pytest.raises(runs.StudyError, match="unknown optimizer 'nope'; valid choices: sgd, adam"):
        optimizers.get("nope")


PLUGIN = '''
import torch
from minima.optimizers import OptimizerEntry, register

register(OptimizerEntry("rmsprop", "RMSprop", "torch.optim.RMSprop, registered by a test",
                        lambda p, **hp: torch.optim.RMSprop(p, **hp), {"lr": 0.001},
                        accepts=(torch.optim.RMSprop.__init__,)))
'''


def test_an_optimizer_registered_from_outside_runs_and_shows_up_everywhere(tmp_path):
    """RMSprop, registered through $MINIMA_EXTRA_OPTIMIZERS with no file of the repository edited."""
    plugin = tmp_path / "rmsprop_plugin.py"
    plugin.write_text(PLUGIN)
    env = {"MINIMA_EXTRA_OPTIMIZERS": str(plugin)}
    results, report = tmp_path / "results", tmp_path / "report"
    run = _python("-m", "minima", "run", "--smoke", "--quiet", "--data-source", "embedded", "--optimizers",
                  "rmsprop", "sgd", "--results-dir", str(results), env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (results / "rmsprop" / "seed0" / "done").exists()
    assert json.loads((results / "rmsprop" / "seed0" / "config.json").read_text())["hyperparameters"] == {"lr": 0.001}
    status = _python("-m", "minima", "status", "--results-dir", str(results), env=env)
    assert "done       rmsprop/seed0" in status.stdout
    rep = _python("-m", "minima", "report", "--results", str(results), "--report-dir", str(report), env=env,
                  timeout=600)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "| RMSprop |" in (report / "tables" / "accuracy.md").read_text()
    assert (report / "figures" / "sharpness.png").exists()
    for name in ("preconditioned_sharpness", "subspace_overlap", "full_data_outliers"):  # smoke runs track them
        assert (report / "figures" / f"{name}.png").exists(), name
    assert "| RMSprop |" in (report / "tables" / "instruments.md").read_text()
    assert not (ROOT / "notebooks" / "rmsprop.ipynb").exists()


# ---------------------------------------------------------------------------- the lock

def test_a_second_launch_of_a_running_run_is_refused_and_the_first_completes(tmp_path):
    args = ["-m", "minima", "run", "--smoke", "--quiet", "--data-source", "embedded", "--optimizers", "sgd",
            "--results-dir", str(tmp_path)]
    first = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    lock = tmp_path / "sgd" / "seed0" / "lock"
    deadline = time.time() + 60
    while not lock.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert lock.exists(), "the first launch never took the lock"
    second = _python(*args, timeout=120)
    out, _ = first.communicate(timeout=600)
    assert second.returncode == 1
    assert f"is being run by pid {first.pid} on {socket.gethostname()} since" in second.stdout
    assert first.returncode == 0 and "[sgd seed 0] done" in out
    assert (tmp_path / "sgd" / "seed0" / "done").exists() and not lock.exists()


def test_a_stale_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": "then"}))
    assert runs.status(run_dir)[0] != "running"
    lock = RunLock(run_dir).acquire(heartbeat=False)
    assert json.loads((run_dir / "lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run_dir / "lock").exists()
    # a lock whose heartbeat stopped (another host, untouched for long) is stale too
    (run_dir / "lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "then"}))
    old = time.time() - 10 * 60
    os.utime(run_dir / "lock", (old, old))
    RunLock(run_dir).acquire(heartbeat=False).release()


def test_a_live_lock_names_its_holder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "lock").write_text(json.dumps({"host": "node17", "pid": 4242, "since": "2026-12-01T10:00:00"}))
    with pytest.raises(runs.StudyError, match=r"run is being run by pid 4242 on node17 since 2026-12-01T10:00:00"):
        RunLock(run_dir).acquire()
    assert runs.status(run_dir) == ("running", "held by pid 4242 on node17 since 2026-12-01T10:00:00")


def test_a_stopped_run_says_what_it_resumes_from(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    old = time.time() - 10 * 60

    def age_all():
        for p in run_dir.rglob("*"):  # files and folders: status reads the folder's entries' times
            os.utime(p, (old, old))

    age_all()
    assert runs.status(run_dir) == ("incomplete", "no checkpoint yet")
    (run_dir / runs.CHECKPOINT).write_bytes(b"weights")
    age_all()
    assert runs.status(run_dir) == ("incomplete", "resumes from its checkpoint")
    (run_dir / runs.HVP_JOURNAL).mkdir()
    for i in range(3):
        (run_dir / runs.HVP_JOURNAL / f"{i:040x}.pt").write_bytes(b"product")
    (run_dir / runs.HVP_JOURNAL / ".k2x9.tmp").write_bytes(b"half-written")  # a write in flight
    age_all()
    assert runs.status(run_dir) == (
        "incomplete", "resumes from its checkpoint; its final analysis replays 3 journaled Hessian-vector products")


# ---------------------------------------------------------------------------- files

def test_result_files_are_readable_by_group_and_world_under_a_022_umask(tmp_path):
    old = os.umask(0o022)
    try:
        runs.save_json(tmp_path / "final.json", {"a": 1})
        runs.save_csv(tmp_path / "history.csv", [{"a": 1}])
        runs.save_torch(tmp_path / "model.pt", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    for name in ("final.json", "history.csv", "model.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_a_corrupted_checkpoint_gives_one_line_naming_the_file_and_the_remedy(tmp_path):
    data = helpers.load_mnist("embedded", train_size=100, test_size=50, verbose=False)
    config = helpers.make_config("sgd", 0, epochs=2, batch_size=50, data_source="embedded", results_dir=tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip file")
    with pytest.raises(runs.StudyError) as err:
        training.train(training.build_model(0), config, data, run_dir, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {run_dir / 'checkpoint.pt'} is unreadable")
    assert "delete it to start this run from scratch, or pass --force (FORCE = True)" in message


# ---------------------------------------------------------------------------- provenance: the commit

def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_is_dirty_for_code_changes_only_and_recorded_when_the_check_times_out(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    for name in ("code.py", "README.md", "results/run.csv"):
        (repo / name).write_text("a\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    monkeypatch.setattr(runs, "REPO_ROOT", repo)
    assert runs.git_commit() == head
    (repo / "README.md").write_text("prose\n")
    (repo / "results" / "run.csv").write_text("an output\n")
    assert runs.git_commit() == head          # prose and outputs do not make the code dirty
    (repo / "code.py").write_text("b\n")
    assert runs.git_commit() == head + "-dirty"

    real = subprocess.run

    def status_times_out(cmd, **kw):          # a fresh worktree's first status on a loaded machine
        if "status" in cmd:
            raise subprocess.TimeoutExpired(cmd, kw["timeout"])
        return real(cmd, **kw)

    monkeypatch.setattr(runs.subprocess, "run", status_times_out)
    assert runs.git_commit() == head + "-unchecked"
    monkeypatch.setattr(runs, "REPO_ROOT", tmp_path / "not-a-repository")
    monkeypatch.setattr(runs.subprocess, "run", real)
    assert runs.git_commit() == "unknown"
