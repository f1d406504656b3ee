"""The projected-update experiment: its plan (groups, folders, start steps, switches) and its refusals."""

import subprocess
import sys
from pathlib import Path

import pytest

import params
from minima import projected_study, runs
from minima.config import make_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return root, projected_study.plan(per_epoch=40, results_dir=root, data_source="embedded")


def _by_group(root, configs):
    groups = {}
    for c in configs:
        rel = runs.run_dir_for(c).relative_to(root)
        groups.setdefault(rel.parts[1] if rel.parts[0] == "projected" else "study", []).append((rel, c))
    return groups


def test_every_group_has_its_runs_in_its_folder(plan):
    root, configs = plan
    groups = _by_group(root, configs)
    n_lams, n_seeds = len(params.PROJECTED_LAMS), len(params.PROJECTED_SEEDS)
    assert len(groups["check"]) == 2 * n_seeds
    assert len(groups["early"]) == (n_lams + 1) * n_seeds      # every lam and plain SGD
    assert len(groups["final"]) == n_lams * n_seeds
    assert len(groups["study"]) == n_seeds                     # the final regime's baseline: the study's SGD runs
    others = [r for r in params.PROJECTED_REFRESH_GRID if r != params.PROJECTED["refresh_every"]]
    assert len(groups["refresh"]) == len(others) * len(params.PROJECTED_REFRESH_LAMS) * len(
        params.PROJECTED_REFRESH_SEEDS)
    assert len({runs.run_dir_for(c) for c in configs}) == len(configs)   # no two runs share a folder
    assert {rel.as_posix() for rel, _ in groups["study"]} == {f"sgd/seed{s}" for s in params.PROJECTED_SEEDS}
    assert Path("projected/early/projected-lam0.25-start_step40/seed1") in {rel for rel, _ in groups["early"]}


def test_the_start_steps_and_learning_rates_are_the_protocols(plan):
    root, configs = plan
    groups = _by_group(root, configs)
    base_lr = params.SGD["lr"]
    for _, c in groups["early"]:
        assert c["epochs"] == params.PROJECTED_EARLY_EPOCHS
        if c["optimizer"] == "projected":
            assert c["hyperparameters"]["start_step"] == 40 and c["hyperparameters"]["lr"] == base_lr
        else:
            assert c["optimizer"] == "sgd" and c["hyperparameters"]["lr"] == base_lr
    for _, c in groups["final"]:   # the last 10 % of 150 epochs of 40 steps
        assert c["epochs"] == params.EPOCHS and c["hyperparameters"]["start_step"] == 5400
    check = {c["optimizer"]: c["hyperparameters"] for _, c in groups["check"]}
    assert check["projected"]["lam"] == 0.5 and check["projected"]["start_step"] == 0
    assert check["sgd"]["lr"] == pytest.approx(base_lr / 2)
    assert {c["hyperparameters"]["refresh_every"] for _, c in groups["refresh"]} == \
        set(params.PROJECTED_REFRESH_GRID) - {params.PROJECTED["refresh_every"]}


def test_the_short_groups_train_only_and_the_final_regime_tracks(plan):
    root, configs = plan
    for group, members in _by_group(root, configs).items():
        for _, c in members:
            if group in ("check", "early", "refresh"):
                assert not c["tracking"]["on"] and not c["final_analysis"]
            elif group == "final":
                assert c["tracking"]["on"] and not c["final_analysis"]
            else:   # the study's own SGD run, every instrument on
                assert c["tracking"]["on"] and c["final_analysis"] and c["experiment"] is None


def test_the_final_share_counts_steps():
    assert projected_study.final_start_step(150, 40) == 5400
    assert projected_study.final_start_step(2, 4) == 7          # at least one step projected
    assert projected_study.final_start_step(10, 10, share=0.5) == 50


@pytest.mark.parametrize("kwargs, message", [
    (dict(experiment="projected/../x"), "must be names of letters"),
    (dict(experiment="projected/early", sweep="tuning"), "in a sweep or in an experiment, not both"),
])
def test_bad_experiments_are_one_clear_error(kwargs, message):
    with pytest.raises(runs.StudyError, match=message):
        make_config("sgd", 0, data_source="embedded", **kwargs)


def test_the_command_line_refuses_an_unknown_group():
    out = subprocess.run([sys.executable, "-m", "minima", "projected", "--groups", "early", "bogus"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: unknown group 'bogus'; valid choices: check, early, final, refresh"]


def test_the_check_group_runs_headless_and_lam_half_equals_sgd_at_half_the_lr(tmp_path):
    """The experiment's built-in check end to end: two smoke runs through their notebooks, then the report."""
    from minima.report import projected as report
    out = subprocess.run([sys.executable, "-m", "minima", "projected", "--smoke", "--groups", "check", "--seeds", "0",
                          "--results-dir", str(tmp_path), "--jobs", "1", "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    folders = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("done"))
    assert folders == ["projected/check/projected-lam0.5-start_step0/seed0/done",
                       "projected/check/sgd-lr0.05/seed0/done"]
    table = report.check_table(report.collect(tmp_path))
    assert table["identical weights"].tolist() == [True] and table["max |Δw|"].tolist() == ["0.0e+00"]
