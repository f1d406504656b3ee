"""The runner: bad input refused with one clear line, and every notebook executes in smoke mode."""

import functools
import json

import pytest
import torch
from curvature_cases import Stopped, StoppingJournal

import helpers
import params
from minima import data, krylov, optimizers, runs
from minima.__main__ import main

OPTIMIZERS = ["sgd", "adam", "adagrad", "adahessian", "sam"]


def _run(capsys, *argv):
    rc = main(["run", *argv])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--optimizers", "rmsprop"],
     "unknown optimizer 'rmsprop'; valid choices: sgd, adam, adagrad, adahessian, sam, projected"),
    (["--set", "lr=0"], "lr must be a positive number, got 0"),
    (["--set", "lr=-0.1"], "lr must be a positive number, got -0.1"),
    (["--set", "mometum=0.9"], "unknown hyperparameter(s) mometum for sgd; valid choices: lr, momentum, dampening, "
                                "weight_decay, nesterov, maximize, foreach, differentiable, fused"),
    (["--set", "nesterov=true"], "sgd refuses hyperparameters {'nesterov': True}: Nesterov momentum requires a "
                                 "momentum and zero dampening"),
    (["--batch-size", "0"], "batch size must be a positive integer, got 0"),
    (["--epochs", "-3"], "epochs must be a positive integer, got -3"),
    (["--data-source", "kaggle"], "unknown data source 'kaggle'; valid choices: auto, torchvision, embedded"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, argv, message):
    rc, err = _run(capsys, "--results-dir", str(tmp_path), *argv)
    assert rc == 2
    assert err.strip() == f"error: {message}"
    assert not any(tmp_path.iterdir())  # nothing was started


def test_non_integer_seed_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--seeds", "1.5", "--results-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "seed must be an integer from 0 to 4294967295, got '1.5'" in capsys.readouterr().err
    with pytest.raises(helpers.StudyError, match="seed must be an integer from 0 to 4294967295, got 1.5"):
        helpers.make_config("sgd", 1.5)
    with pytest.raises(helpers.StudyError, match="seed must be an integer from 0 to 4294967295, got -1"):
        helpers.make_config("sgd", -1)


def test_torchvision_forced_offline_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "_download_mnist", lambda data_dir, timeout_s: "network unreachable")
    rc, err = _run(capsys, "--data-source", "torchvision", "--data-dir", str(tmp_path / "data"),
                   "--results-dir", str(tmp_path / "results"))
    assert rc == 2
    assert "could not be downloaded (network unreachable)" in err and "'embedded' works offline" in err
    assert not list((tmp_path / "results").rglob("done"))


def test_corrupted_mnist_is_refused(tmp_path, capsys):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.MNIST_FILES:
        (raw / name).write_bytes(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    rc, err = _run(capsys, "--data-source", "torchvision", "--data-dir", str(tmp_path / "data"),
                   "--results-dir", str(tmp_path / "results"))
    assert rc == 2 and "checksum mismatch for" in err and "t10k-labels-idx1-ubyte.gz" in err


def test_unwritable_results_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc, err = _run(capsys, "--data-source", "embedded", "--results-dir", str(blocker / "results"))
    assert rc == 2 and err.startswith("error: results folder") and "is not writable" in err


EXPECTED_FILES = ["config.json", "history.csv", "final.json", "model.pt", "spectrum.csv", "sharpness.csv",
                  "tracking.csv", "equal_loss.csv", "curvature.json", "density.npz", "landscape.npz",
                  "notebook.ipynb", "done"]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    rc = main(["run", "--smoke", "--quiet", "--data-source", "embedded", "--optimizers", *OPTIMIZERS,
                      "--seeds", "0", "--results-dir", str(results)])
    return rc, results


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_notebook_runs_in_smoke_mode(smoke_results, optimizer):
    rc, results = smoke_results
    assert rc == 0
    run_dir = results / optimizer / "seed0"
    assert sorted(EXPECTED_FILES) == sorted(f.name for f in run_dir.iterdir() if not f.name.startswith("."))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["optimizer"] == optimizer and config["smoke"] and config["data"]["source"] == "embedded"
    assert {"versions", "device", "git_commit"} <= set(config["provenance"])
    final = json.loads((run_dir / "final.json").read_text())
    assert final["status"] == "ok" and 0 <= final["test_accuracy"] <= 1
    # every final-weights solve is guarded, with the smoke runs' shorter search
    curv = json.loads((run_dir / "curvature.json").read_text())
    for guard in [curv["guard"], curv["full_data_top"]["guard"], *(s["guard"] for s in curv["batch_sensitivity"])]:
        assert 0 < guard["n_hvps"] <= krylov.GUARD_ROUNDS * params.SMOKE["guard_steps"] < krylov.GUARD_STEPS
    weights = runs.load_torch(run_dir / "model.pt")
    assert sum(t.numel() for t in weights.values()) == 61_706
    assert not (run_dir / "checkpoint.pt").exists()  # resume state is dropped once the run is complete
    assert not (run_dir / runs.HVP_JOURNAL).exists() and curv["full_data_top"]["n_hvps_replayed"] == 0
    assert not (run_dir / "lock").exists()  # and the lock is given up


def test_finished_runs_are_skipped_and_status_lists_them(smoke_results, capsys):
    rc, results = smoke_results
    done_before = (results / "sgd" / "seed0" / "done").stat().st_mtime_ns
    assert main(["run", "--smoke", "--quiet", "--data-source", "embedded", "--optimizers", "sgd",
                        "--results-dir", str(results)]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (results / "sgd" / "seed0" / "done").stat().st_mtime_ns == done_before
    counts = runs.print_status(results)
    assert counts["done"] == len(OPTIMIZERS)


def test_a_final_analysis_stopped_in_the_full_data_solve_resumes_from_its_journal(smoke_results, tmp_path,
                                                                                  monkeypatch):
    from minima import analysis, curvature, training
    rc, results = smoke_results
    run_dir = results / "sgd" / "seed0"
    config = runs.load_json(run_dir / "config.json")
    d = config["data"]
    mnist = data.load_mnist("embedded", train_size=d["train_size"], test_size=d["test_size"],
                            validation_size=d["validation_size"], verbose=False)
    model = training.build_model(config["seed"], "cpu", config["model"]["activation"])
    model.load_state_dict(runs.load_torch(run_dir / "model.pt"))
    (tmp_path / "whole").mkdir()
    whole = analysis.final_curvature(model, mnist, config, tmp_path / "whole", progress=lambda line: None)

    folder = tmp_path / "stopped"
    folder.mkdir()
    # the process dies before the full-data solve's 6th product
    monkeypatch.setattr(curvature, "HvpJournal", functools.partial(StoppingJournal, after=5))
    with pytest.raises(Stopped):
        analysis.final_curvature(model, mnist, config, folder, progress=lambda line: None)
    monkeypatch.undo()
    assert len(list((folder / runs.HVP_JOURNAL).glob("*.pt"))) == 5 and not (folder / runs.CURVATURE).exists()

    lines = []
    resumed = analysis.final_curvature(model, mnist, config, folder, progress=lines.append)
    top, ref = resumed["full_data_top"], whole["full_data_top"]
    assert top["n_hvps_replayed"] == 5 and ref["n_hvps_replayed"] == 0 and top["n_hvps"] == ref["n_hvps"]
    assert top["eigenvalues"] == ref["eigenvalues"] and top["residuals"] == ref["residuals"]
    assert resumed["top_eigenvalues"] == whole["top_eigenvalues"] and resumed["trace"] == whole["trace"]
    assert f"  resumed: 5 of its {top['n_hvps']} products read back from {folder / runs.HVP_JOURNAL}" in lines
    runs.mark_done(folder)
    assert not (folder / runs.HVP_JOURNAL).exists()


def test_reanalyse_redoes_the_final_analysis_from_model_pt_and_nothing_else(smoke_results, tmp_path, capsys):
    import shutil

    import numpy as np
    rc, results = smoke_results
    run_dir = tmp_path / "adam" / "seed0"
    shutil.copytree(results / "adam" / "seed0", run_dir)
    kept = {f.name: f.read_bytes() for f in run_dir.iterdir() if f.name not in ("curvature.json", "density.npz",
                                                                                "landscape.npz", "done")}
    before = json.loads((run_dir / "curvature.json").read_text())
    (run_dir / "curvature.json").write_text(json.dumps(dict(before, top_eigenvalues=[1.0, 0.5])))  # stale values
    assert main(["reanalyse", str(run_dir)]) == 0
    after = json.loads((run_dir / "curvature.json").read_text())
    # the same code on the same weights gives the run's own numbers back, and only the analysis files change
    assert after["top_eigenvalues"] == before["top_eigenvalues"] and after["guard"]["found"] == 0
    assert after["trace"] == before["trace"]
    with np.load(results / "adam" / "seed0" / "landscape.npz") as a, np.load(run_dir / "landscape.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert {f.name: f.read_bytes() for f in run_dir.iterdir() if f.name in kept} == kept
    record = json.loads((run_dir / "reanalysis.json").read_text())
    assert record["before"]["top_eigenvalues"] == [1.0, 0.5] and "git_commit" in record["provenance"]
    # what the replaced analysis cost stays on record beside what the new one cost
    for side, curv in (("before", before), ("after", after)):
        assert record[side]["time_s"] == curv["time_s"] > 0
        assert record[side]["full_data_n_hvps"] == curv["full_data_top"]["n_hvps"] > 0
    assert (run_dir / "done").exists() and not (run_dir / ".reanalyse").exists() and not (run_dir / "lock").exists()
    # an unfinished run is refused with one line, before any work
    (run_dir / "done").unlink()
    capsys.readouterr()
    assert main(["reanalyse", str(run_dir)]) == 2
    assert "is not a complete run (missing: done); reanalyse redoes finished runs only" in capsys.readouterr().err


def test_a_stopped_reanalysis_resumes_from_its_journal_and_leaves_the_run_as_it_was(smoke_results, tmp_path,
                                                                                     monkeypatch, capsys):
    import shutil

    from minima import curvature
    rc, results = smoke_results
    run_dir = tmp_path / "sgd" / "seed0"
    shutil.copytree(results / "sgd" / "seed0", run_dir)
    files = {f.name: f.read_bytes() for f in run_dir.iterdir() if f.is_file()}
    monkeypatch.setattr(curvature, "HvpJournal", functools.partial(StoppingJournal, after=5))
    with pytest.raises(Stopped):  # the process dies before the full-data solve's 6th product
        main(["reanalyse", str(run_dir)])
    monkeypatch.undo()
    journal = run_dir / ".reanalyse" / runs.HVP_JOURNAL
    assert len(list(journal.glob("*.pt"))) == 5
    # nothing of the run changed: still complete, with its own analysis
    assert {f.name: f.read_bytes() for f in run_dir.iterdir() if f.is_file()} == files
    (run_dir / ".reanalyse" / "density.npz").write_bytes(b"a stale half-written file")
    capsys.readouterr()
    assert main(["reanalyse", str(run_dir)]) == 0
    out = capsys.readouterr().out
    after = json.loads((run_dir / "curvature.json").read_text())
    before = json.loads(files["curvature.json"])
    assert f"resumed: 5 of its {after['full_data_top']['n_hvps']} products read back from {journal}" in out
    assert after["full_data_top"]["eigenvalues"] == before["full_data_top"]["eigenvalues"]
    assert after["top_eigenvalues"] == before["top_eigenvalues"]
    assert (run_dir / "done").exists() and not (run_dir / ".reanalyse").exists()


def test_any_constructor_keyword_reaches_the_optimizer(tmp_path):
    config = helpers.make_config("sgd", 0, overrides={"momentum": 0.9, "nesterov": True}, results_dir=tmp_path)
    assert config["hyperparameters"] == {"lr": 0.1, "momentum": 0.9, "nesterov": True}
    model = torch.nn.Linear(2, 1)
    opt = optimizers.make_optimizer("sgd", model, config["hyperparameters"])
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["nesterov"] is True
    sam = helpers.make_config("sam", 0, overrides={"momentum": 0.5, "rho": 0.1}, results_dir=tmp_path)
    opt = optimizers.make_optimizer("sam", model, sam["hyperparameters"])
    assert opt.base_optimizer.param_groups[0]["momentum"] == 0.5 and opt.param_groups[0]["rho"] == 0.1


def test_runs_go_seed_by_seed_so_a_stopped_study_has_whole_seeds(tmp_path, monkeypatch):
    from minima import runner

    seen = []
    monkeypatch.setattr(runner, "run_configs", lambda configs, **kw: seen.extend(configs) or 0)
    assert main(["run", "--optimizers", "sgd", "adam", "sam", "--seeds", "0", "1", "--smoke",
                 "--results-dir", str(tmp_path)]) == 0
    assert [(c["seed"], c["optimizer"]) for c in seen] == [(0, "sgd"), (0, "adam"), (0, "sam"),
                                                           (1, "sgd"), (1, "adam"), (1, "sam")]
