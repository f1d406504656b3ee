"""Sweeps: the plan, real parallel local jobs, a failure that blocks nothing, a killed run that resumes,
the Slurm path (parameters, sbatch file, job array run through submitit's debug executor) and the table."""

import os
import re
import threading
import time
from datetime import datetime

import numpy as np
import pandas as pd
import psutil
import pytest
import submitit
import torch

import helpers
import params
from minima import lock as run_lock
from minima import runs
from minima.config import make_config
from minima.sweeps import cli, jobs, launch, plan, summary
from minima.sweeps import slurm as slurm_module

SMOKE = dict(smoke=True, data_source="embedded", lr_grid=None, progress=False, poll_s=0.2)
# Passes make_config (Adagrad accepts it when built), and Adagrad's first step fails inside the notebook.
FAILING = {"adagrad": [{"differentiable": True}]}
FAILURE = "RuntimeError: a leaf Variable that requires grad is being used in an in-place operation."
KILL_EPOCHS = 8  # long enough a smoke run to kill between two epoch checkpoints


def _timestamp(text):
    return datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S%z").timestamp()


# ---------------------------------------------------------------- plan and command line (no runs)

def test_plan_is_the_params_grid_with_overrides_recorded(tmp_path):
    configs = plan.plan_sweep("grid", ["sgd", "adam"], [0, 1], results_dir=tmp_path)
    assert len(configs) == 2 * len(params.LR_GRID_FACTORS) * 2
    for opt in ("sgd", "adam"):
        lrs = sorted({c["overrides"]["lr"] for c in configs if c["optimizer"] == opt})
        assert lrs == pytest.approx([{'sgd': 0.1, 'adam': 0.001}[opt] * f for f in params.LR_GRID_FACTORS], rel=1e-5)
    for c in configs:
        assert c["sweep"] == "grid" and c["hyperparameters"]["lr"] == c["overrides"]["lr"]
        assert c["data"]["validation_size"] == params.VALIDATION_SIZE
    root = tmp_path.resolve() / "sweeps" / "grid"
    dirs = {helpers.run_dir_for(c) for c in configs}
    assert root / "sgd-lr0.01" / "seed0" in dirs and root / "adam-lr0.000316" / "seed1" in dirs

    explicit = plan.plan_sweep("x", ["sgd", "adam"], [0], lr_grid={"sgd": [0.05, 0.05, 0.2]}, smoke=True,
                                 results_dir=tmp_path)
    assert [c["overrides"] for c in explicit if c["optimizer"] == "sgd"] == [{"lr": 0.05}, {"lr": 0.2}]
    assert len([c for c in explicit if c["optimizer"] == "adam"]) == len(params.LR_GRID_FACTORS)
    assert explicit[0]["data"]["validation_size"] == params.SMOKE["validation_size"] < params.SMOKE["train_size"]
    default = plan.plan_sweep("d", ["adagrad"], [3], lr_grid=None, results_dir=tmp_path)
    assert [(c["overrides"], helpers.run_dir_for(c).parent.name) for c in default] == [({}, "adagrad-default")]


@pytest.mark.parametrize("argv, message", [
    (["launch", "--name", "s", "--optimizers", "sgdx"], "unknown optimizer 'sgdx'"),
    (["launch", "--name", "s", "--lr-grid", "-0.1"], "learning rate must be a positive number"),
    (["launch", "--name", "s", "--lr-grid", "rmsprop=0.1"], "unknown optimizer 'rmsprop' in --lr-grid"),
    (["launch", "--name", "s", "--optimizers", "sgd", "--lr-grid", "adam=0.1"], "learning rates given for adam"),
    (["launch", "--name", "s", "--launcher", "cloud"], "invalid choice: 'cloud'"),
    (["launch", "--name", "no/slash"], "sweep name 'no/slash'"),
    (["launch", "--name", "s", "--max-parallel", "0"], "--max-parallel must be a positive integer"),
    (["launch", "--name", "s", "--epochs", "0"], "epochs must be a positive integer"),
    (["launch", "--name", "s", "--launcher", "slurm", "--cpus", "0", "--dry-run"], "--cpus must be an integer"),
    (["launch", "--name", "s", "--launcher", "slurm"], "srun was not found"),
    (["status", "--name", "nothing-here"], "no sweep named 'nothing-here'"),
    (["collect"], "the following arguments are required: --name"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here, even on a Slurm login node
    try:
        rc = cli.main(argv + ["--results-dir", str(tmp_path)])
    except SystemExit as stop:  # argparse's own refusals
        rc = stop.code
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "sweeps").exists()  # refused before anything was written


def test_dry_run_prints_the_runs_and_the_array_script(tmp_path, capsys):
    rc = cli.main(["launch", "--name", "dry", "--optimizers", "sgd", "adam", "--seeds", "0", "1", "--lr-grid",
                      "none", "--launcher", "slurm", "--dry-run", "--max-parallel", "3", "--partition", "gpu",
                      "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "4 to launch" in out and "adam-default/seed1" in out
    assert "#SBATCH --array=0-3%3" in out and "#SBATCH --partition=gpu" in out
    assert not (tmp_path / "sweeps").exists()


# ---------------------------------------------------------------- the Slurm path, without a cluster

def test_slurm_parameters_make_the_sbatch_file_submitit_would_write(tmp_path):
    slurm = slurm_module.slurm_parameters("lr", partition="gpu", time_min=90, gpus=2, cpus=8, mem_gb=12, max_parallel=5)
    folder = tmp_path / ".submitit"
    script = slurm_module.sbatch_script(slurm, folder, 20)
    for line in ("#SBATCH --array=0-19%5", "#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=12GB", "#SBATCH --job-name=sweep-lr",
                 f"#SBATCH --output={folder}/%A_%a_0_log.out", "#SBATCH --signal=USR2@"):
        assert line in script, line

    class Slurm(submitit.SlurmExecutor):  # the real executor, told that srun exists
        @classmethod
        def affinity(cls):
            return 2

    real = Slurm(folder)
    real.update_parameters(**slurm)  # submitit validates every parameter here
    real.parameters["map_count"] = 20  # what its job-array submission sets
    assert real._make_submission_file_text(real._submitit_command_str, "uid") == script
    assert "--array" not in slurm_module.sbatch_script(slurm, folder, 1)  # one run is a plain job


def test_slurm_launch_submits_one_array_and_collects_its_outcomes(tmp_path, monkeypatch):
    made, calls = [], []

    class FakeSlurm(submitit.DebugExecutor):
        """Stands in for SlurmExecutor: keeps the parameters and the arrays, runs the jobs in-process."""
        def __init__(self, folder, max_num_timeout=3):
            super().__init__(folder)
            self.max_num_timeout, self.arrays = max_num_timeout, []
            made.append(self)

        def _internal_process_submissions(self, delayed):
            self.arrays.append(len(delayed))
            return super()._internal_process_submissions(delayed)

    def execute_run(config, **kwargs):  # the notebook itself is exercised by the local sweeps below
        lock = helpers.run_dir_for(config) / "lock"
        before = lock.stat().st_mtime_ns
        time.sleep(0.2)
        beats = lock.stat().st_mtime_ns > before  # the job holds the run's lock, whose heartbeat keeps it alive
        calls.append((config["optimizer"], config["seed"], os.environ.get("OMP_NUM_THREADS"), beats))
        return "failed: ValueError: no good" if config["seed"] == 1 else "done"

    monkeypatch.setattr(submitit, "SlurmExecutor", FakeSlurm)
    monkeypatch.setattr(jobs, "execute_run", execute_run)
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.02)
    slurm = dict(partition="cpu", time_min=30, gpus=0, cpus=3, mem_gb=4)
    out = launch.launch_sweep("cluster", ["sgd", "adam"], [0, 1], launcher="slurm", slurm=slurm, max_parallel=2,
                              results_dir=tmp_path, **SMOKE)
    assert out == {"sgd-default/seed0": "done", "sgd-default/seed1": "failed: ValueError: no good",
                   "adam-default/seed0": "done", "adam-default/seed1": "failed: ValueError: no good"}
    (ex,) = made
    assert ex.arrays == [4] and ex.max_num_timeout == slurm_module.SLURM_REQUEUES  # one array of every run
    assert ex.parameters == slurm_module.slurm_parameters("cluster", max_parallel=2, **slurm)
    assert ex.folder == plan.sweep_dir("cluster", tmp_path) / ".submitit"
    assert sorted(calls) == [(o, s, "3", True) for o in ("adam", "sgd") for s in (0, 1)]  # --cpus: torch threads
    status = {run: (s, d) for run, s, d in plan.sweep_status("cluster", tmp_path)}
    assert status["adam-default/seed1"] == ("failed", "ValueError: no good")  # the launcher recorded it


# ---------------------------------------------------------------- real local sweeps

def test_local_sweep_runs_jobs_in_parallel_and_a_relaunch_runs_nothing(tmp_path):
    out = launch.launch_sweep("par", ["sgd", "adam"], [0, 1], max_parallel=2, results_dir=tmp_path, **SMOKE)
    assert out == {f"{o}-default/seed{s}": "done" for o in ("sgd", "adam") for s in (0, 1)}
    root = plan.sweep_dir("par", tmp_path)
    dones = sorted(root.glob("*/seed*/done"))
    assert len(dones) == 4
    spans, pids = [], set()
    for done in dones:
        cfg = runs.load_json(done.parent / "config.json")
        assert cfg["provenance"]["device"]["torch_threads"] == max(1, plan.usable_cores() // 2)
        assert cfg["data"]["n_validation"] == params.SMOKE["validation_size"]
        assert "val_accuracy" in pd.read_csv(done.parent / "history.csv")
        log = (done.parent / "job.log").read_text()
        # each job's lifetime from its job.log (its kernel's start included): a train-only smoke run can
        # take less than the second to which the run folder's own timestamps resolve
        started = _timestamp(re.search(r"=== job \S+ on \S+, pid \d+, (\S+)", log).group(1))
        spans.append((started, started + max(1.0, float(re.search(r"=== done after (\d+) s", log).group(1)))))
        pids |= set(re.findall(r"pid (\d+)", log))
    assert len(pids) == 4 and str(os.getpid()) not in pids  # one process per job, none of them us
    most_at_once = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert most_at_once == 2  # two jobs ran at the same time, never more

    assert [s for _, s, _ in plan.sweep_status("par", tmp_path)] == ["done"] * 4
    table = cli.collect("par", tmp_path)
    for opt in ("sgd", "adam"):
        row = table[table.optimizer == opt].iloc[0]
        finals = [runs.load_json(root / f"{opt}-default" / f"seed{s}" / "final.json")["test_accuracy"]
                  for s in (0, 1)]
        assert row.done == 2 and row.best
        assert row.test_accuracy_mean == pytest.approx(np.mean(finals))
        assert row.test_accuracy_sd == pytest.approx(np.std(finals, ddof=1))
    assert (root / "summary.md").exists() and len(pd.read_csv(root / "summary.csv")) == 2

    mtimes = [d.stat().st_mtime_ns for d in dones]
    again = launch.launch_sweep("par", ["sgd", "adam"], [0, 1], max_parallel=2, results_dir=tmp_path, **SMOKE)
    assert set(again.values()) == {"skipped"}
    assert [d.stat().st_mtime_ns for d in dones] == mtimes


def test_a_train_only_sweep_run_trains_exactly_as_the_full_run(tmp_path, monkeypatch):
    """Sweep runs skip the trackers and the final analysis; the weights and the history are the same bit for bit."""
    from minima import runner

    # one thread for the job (the launcher splits the cores between max_parallel slots): bitwise equality needs
    # the same count in both runs, and one thread does not oversubscribe a core that a parallel test worker uses
    slots = plan.usable_cores()
    out = launch.launch_sweep("same", ["sgd"], [0], max_parallel=slots, results_dir=tmp_path, **SMOKE)
    assert out == {"sgd-default/seed0": "done"}
    light = plan.sweep_dir("same", tmp_path) / "sgd-default" / "seed0"
    assert not any((light / f).exists() for f in ("curvature.json", "spectrum.csv", "tracking.csv", "landscape.npz"))
    assert runs.load_json(light / "config.json")["provenance"]["device"]["torch_threads"] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the sweep job's thread count
    config = make_config("sgd", 0, smoke=True, data_source="embedded", results_dir=tmp_path / "full",
                               validation_size=params.SMOKE["validation_size"])
    assert config["tracking"]["on"] and config["final_analysis"]
    assert runner.execute_run(config, progress=False) == "done"
    full = helpers.run_dir_for(config)
    assert (full / "curvature.json").exists() and (full / "spectrum.csv").exists()
    a, b = runs.load_torch(light / "model.pt"), runs.load_torch(full / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha, hb = pd.read_csv(light / "history.csv"), pd.read_csv(full / "history.csv")
    timing = [c for c in ha if c.endswith("_time_s")]
    pd.testing.assert_frame_equal(ha.drop(columns=timing), hb.drop(columns=timing))


def test_a_job_that_raises_is_reported_with_its_error_line(tmp_path):
    root = plan.sweep_dir("raise", tmp_path)
    root.mkdir(parents=True)
    (root / "sgd-default").write_text("a file where the run folder's parent should be\n")
    out = launch.launch_sweep("raise", ["sgd"], [0], results_dir=tmp_path, **SMOKE)
    assert re.fullmatch(r"failed: (minima\.(runs|errors)\.)?StudyError: "
                        r"results folder .*sgd-default/seed0 is not writable .*", out["sgd-default/seed0"])


def _kill_job_tree(controller_pid):
    """SIGKILL a local job: its controller, the process running the run, and the notebook's kernel."""
    root = psutil.Process(controller_pid)
    procs = [root] + root.children(recursive=True)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def test_a_killed_jobs_failure_waits_for_its_lock_holder_to_exit(tmp_path):
    """SIGKILL returns before the process is gone: the failure line waits for the holder, and only for a kill."""
    import json
    import socket
    import subprocess
    import sys

    def held_by(proc, run_dir):
        run_dir.mkdir()
        (run_dir / run_lock.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": proc.pid,
                                                        "since": "now", "token": "t"}))

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    held_by(proc, killed)
    jobs._record_failure(killed, "failed: the job ended without a result (killed?); relaunch to resume it")
    assert proc.poll() is not None  # it waited for the holder to exit
    assert "without a result" in (killed / runs.ERROR).read_text()
    assert runs.status(killed)[0] == "failed"

    refused = tmp_path / "refused"  # a duplicate launch's failure says nothing about the live run
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        held_by(proc, refused)
        t0 = time.time()
        jobs._record_failure(refused, "failed: ... is being run by pid 1 on host")
        assert time.time() - t0 < 1 and not (refused / runs.ERROR).exists()
        assert runs.status(refused)[0] == "running"
    finally:
        proc.kill()
        proc.wait()


def test_a_failure_blocks_nothing_and_a_killed_run_resumes_alone(tmp_path):
    kw = dict(settings=FAILING, epochs=KILL_EPOCHS, max_parallel=2, results_dir=tmp_path, **SMOKE)
    root = plan.sweep_dir("resume", tmp_path)
    victim = root / "sgd-default" / "seed0"
    first = {}
    launcher = threading.Thread(
        target=lambda: first.update(launch.launch_sweep("resume", ["sgd", "adagrad"], [0, 1], **kw)))
    launcher.start()
    deadline = time.time() + 240
    while not (victim / "checkpoint.pt").exists():
        assert launcher.is_alive() and time.time() < deadline, "the run never wrote a checkpoint"
        time.sleep(0.05)
    controller = int(re.search(r"=== job (\d+)", (victim / "job.log").read_text()).group(1))
    _kill_job_tree(controller)
    epochs_at_kill = runs.load_torch(victim / "checkpoint.pt")["epoch"]
    launcher.join(timeout=240)
    assert not launcher.is_alive()
    assert 1 <= epochs_at_kill < KILL_EPOCHS and not helpers.is_done(victim)

    assert first["sgd-default/seed0"].startswith("failed: the job ended without a result")
    assert first["sgd-default/seed1"] == "done"
    for seed in (0, 1):
        assert first[f"adagrad-differentiableTrue/seed{seed}"] == "failed: " + FAILURE
    status = {run: (s, detail) for run, s, detail in plan.sweep_status("resume", tmp_path)}
    assert status["adagrad-differentiableTrue/seed1"] == ("failed", FAILURE)
    assert status["sgd-default/seed0"][0] == "failed" and "without a result" in status["sgd-default/seed0"][1]
    assert status["sgd-default/seed1"][0] == "done"

    kept = (root / "sgd-default" / "seed1" / "done").stat().st_mtime_ns
    second = launch.launch_sweep("resume", ["sgd"], [0, 1], **kw)  # a relaunch may name part of the sweep
    assert second == {"sgd-default/seed0": "done", "sgd-default/seed1": "skipped"}
    assert (root / "sgd-default" / "seed1" / "done").stat().st_mtime_ns == kept  # not run again
    assert f"after epoch {epochs_at_kill}" in (victim / "job.log").read_text()  # resumed, not restarted
    assert pd.read_csv(victim / "history.csv").epoch.tolist() == list(range(1, KILL_EPOCHS + 1))
    assert not (victim / "error.txt").exists()


# ---------------------------------------------------------------- the summary table

def _fake_run(cfg, *, val, test, status="ok", val_loss=0.1):
    """A finished run folder as the notebook leaves it: config, history with validation, final.json, done."""
    run_dir = helpers.run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    runs.save_json(run_dir / "config.json", cfg)
    runs.save_csv(run_dir / "history.csv", [{"epoch": 1, "val_accuracy": 0.1, "val_loss": 2.0, "test_accuracy": 0.1},
                                               {"epoch": 2, "val_accuracy": val, "val_loss": val_loss,
                                                "test_accuracy": test}])
    runs.save_json(run_dir / "final.json", {"status": status, "test_accuracy": test if status == "ok" else None,
                                               "diverged_at": {"epoch": 2, "step": 7} if status != "ok" else None})
    runs.mark_done(run_dir)


def test_collect_picks_the_best_lr_on_mean_validation_accuracy(tmp_path):
    configs = plan.plan_sweep("tab", ["sgd", "adam"], [0, 1, 2], lr_grid={"sgd": [0.05, 0.1], "adam": [0.001, 0.01]},
                                results_dir=tmp_path)
    plan.record_plan("tab", configs, {})
    val = {("sgd", 0.05): [0.90, 0.92, 0.91], ("sgd", 0.1): [0.95, 0.93, 0.94],
           ("adam", 0.001): [0.96, 0.96, 0.95], ("adam", 0.01): [0.99, 0.98, None]}
    for cfg in configs:
        v = val[cfg["optimizer"], cfg["overrides"]["lr"]][cfg["seed"]]
        if v is not None:
            _fake_run(cfg, val=v, test=v - 0.01)
        else:
            _fake_run(cfg, val=float("nan"), test=float("nan"), status="diverged")
    table = cli.collect("tab", tmp_path).set_index(["optimizer", "lr"])
    assert table.loc[("sgd", 0.1), "val_accuracy_mean"] == pytest.approx(0.94)
    assert table.loc[("sgd", 0.1), "val_accuracy_sd"] == pytest.approx(np.std([0.95, 0.93, 0.94], ddof=1))
    assert table.loc[("sgd", 0.1), "test_accuracy_mean"] == pytest.approx(0.93)
    assert table.loc[("adam", 0.01), ["done", "diverged"]].tolist() == [2, 1]
    best = table[table.best].index.tolist()
    assert best == [("sgd", 0.1), ("adam", 0.001)]  # adam 0.01 has the higher mean, but a seed diverged
    md = (plan.sweep_dir("tab", tmp_path) / "summary.md").read_text()
    assert "| sgd | 0.1 | lr0.1 | 0.9400 ± 0.0100 | 0.9300 ± 0.0100 |" in md
    saved = pd.read_csv(plan.sweep_dir("tab", tmp_path) / "summary.csv")
    assert saved.best.sum() == 2 and len(saved) == 4


def _fixture_sweep(tmp_path, name, values):
    """A sweep of finished fake runs: values[(optimizer, lr)] = [(val accuracy, val loss) or None (diverged), ...]."""
    grid = {}
    for opt, lr in values:
        grid.setdefault(opt, []).append(lr)
    configs = plan.plan_sweep(name, list(grid), [0, 1], lr_grid=grid, results_dir=tmp_path)
    plan.record_plan(name, configs, {})
    for cfg in configs:
        v = values[cfg["optimizer"], cfg["overrides"]["lr"]][cfg["seed"]]
        if v is None:
            _fake_run(cfg, val=float("nan"), test=float("nan"), status="diverged")
        else:
            _fake_run(cfg, val=v[0], test=v[0] - 0.01, val_loss=v[1])
    return configs


def test_selection_breaks_ties_on_validation_loss_and_extends_the_grid_at_its_edges(tmp_path):
    values = {
        ("sgd", 0.01): [(0.90, 0.3), (0.92, 0.3)], ("sgd", 0.1): [(0.95, 0.2), (0.93, 0.2)],
        ("sgd", 1.0): [(0.99, 0.1), None],                      # best mean, but a seed diverged: interior optimum
        ("adam", 0.001): [(0.90, 0.3), (0.90, 0.3)], ("adam", 0.01): [(0.96, 0.2), (0.94, 0.2)],  # upper edge
        ("adagrad", 0.01): [(0.95, 0.1), (0.93, 0.1)],          # ties with 0.1 on accuracy, lower loss: lower edge
        ("adagrad", 0.1): [(0.94, 0.2), (0.94, 0.2)],
        ("sam", 0.1): [None, None], ("sam", 1.0): [None, None],  # nothing trains: try below
    }
    _fixture_sweep(tmp_path, "sel", values)
    table = cli.collect("sel", tmp_path, echo=False)
    best = dict(table[table.best][["optimizer", "lr"]].itertuples(index=False))
    assert best == {"sgd": 0.1, "adam": 0.01, "adagrad": 0.01}
    assert summary.extensions(table) == {"adam": 0.1, "adagrad": 0.001, "sam": 0.01}
    md = (plan.sweep_dir("sel", tmp_path) / "summary.md").read_text()
    assert "adam lr 0.1, adagrad lr 0.001, sam lr 0.01" in md and "no eligible setting" in md
    per_run = pd.read_csv(plan.sweep_dir("sel", tmp_path) / "runs.csv")
    assert len(per_run) == 2 * len(values) and set(per_run.status) == {"done", "diverged"}


def test_unfinished_settings_select_and_extend_nothing(tmp_path):
    configs = _fixture_sweep(tmp_path, "part", {("sgd", 0.01): [(0.9, 0.3), (0.9, 0.3)],
                                                 ("sgd", 0.1): [(0.95, 0.2), (0.95, 0.2)]})
    more = plan.plan_sweep("part", ["sgd"], [0, 1], lr_grid={"sgd": [0.316]}, results_dir=tmp_path)
    plan.record_plan("part", more, {})  # planned, not run
    table = cli.collect("part", tmp_path, echo=False)
    assert table[table.best].lr.tolist() == [0.1]  # 0.316 has no finished seed: 0.1 is not the edge any more
    assert summary.extensions(table) == {}
    assert len(configs) == 4


def test_extend_adds_grid_points_until_no_selection_sits_at_an_edge(tmp_path, monkeypatch):
    """--extend on a fake sweep whose validation accuracy peaks at lr 1: two points added above 0.1, then stop."""
    _fixture_sweep(tmp_path, "ext", {("sgd", 0.01): [(0.90, 0.3), (0.90, 0.3)],
                                      ("sgd", 0.1): [(0.95, 0.2), (0.95, 0.2)]})
    launched = []

    def fake_launch(name, optimizers, seeds, lr_grid, **kw):
        configs = plan.plan_sweep(name, optimizers, seeds, lr_grid=lr_grid, results_dir=kw["results_dir"])
        plan.record_plan(name, configs, {})
        for cfg in configs:
            lr = cfg["overrides"]["lr"]
            launched.append(lr)
            _fake_run(cfg, val=0.99 if lr == 1.0 else 0.96, test=0.9, val_loss=0.1)
        return {str(helpers.run_dir_for(c)): "done" for c in configs}

    monkeypatch.setattr(cli, "launch_sweep", fake_launch)
    cli.extend("ext", ["sgd"], [0, 1], {"results_dir": tmp_path})
    assert sorted(set(launched)) == [1.0, 10.0]  # 1 is at the edge once run, so 10 is tried; then 1 is interior
    table = cli.collect("ext", tmp_path, echo=False)
    assert table[table.best].lr.tolist() == [1.0] and summary.extensions(table) == {}


def test_run_tuned_takes_each_optimizers_selected_learning_rate(tmp_path):
    from minima import runner

    _fixture_sweep(tmp_path, "pick", {("sgd", 0.01): [(0.90, 0.3), (0.90, 0.3)], ("sgd", 0.1): [(0.95, 0.2)] * 2,
                                       ("adam", 0.001): [(0.97, 0.2)] * 2, ("adam", 0.01): [(0.95, 0.2)] * 2})
    with pytest.raises(runs.StudyError, match="collect the sweep first"):
        runner.tuned_learning_rates("pick", tmp_path, ["sgd"])
    cli.collect("pick", tmp_path, echo=False)
    assert runner.tuned_learning_rates("pick", tmp_path, ["sgd", "adam"]) == {"sgd": 0.1, "adam": 0.001}
    with pytest.raises(runs.StudyError, match="selected no learning rate for adagrad"):
        runner.tuned_learning_rates("pick", tmp_path, ["sgd", "adagrad"])
    from minima.__main__ import main

    # adam's selection is its original lr: its tuned runs would repeat the original study's, so none is started
    assert main(["run", "--tuned", "pick", "--sweeps-dir", str(tmp_path), "--optimizers", "adam", "--smoke",
                 "--results-dir", str(tmp_path / "tuned")]) == 0
    assert not (tmp_path / "tuned").exists()
