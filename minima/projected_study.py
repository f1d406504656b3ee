"""The projected-update experiment: which runs it needs, where they go, and the ``projected`` verb.

The update (``minima.projected``) replaces the gradient g by λ V Vᵀ g + (1 − λ)(I − V Vᵀ) g, with V the
top-k Hessian eigenvectors. Four groups of ordinary run folders, every λ in ``params.PROJECTED_LAMS`` and
``params.PROJECTED_SEEDS`` unless said otherwise, SGD at the original's lr and batch as the base:

- ``check``: λ = 0.5 from step 0 beside plain SGD at half the learning rate, for
  ``params.PROJECTED_EARLY_EPOCHS``. The two must end with the same weights: the built-in check.
- ``early``: the update switched on after one epoch and kept ``PROJECTED_EARLY_EPOCHS - 1`` epochs, beside
  plain SGD from the same weights (the same seed: before the start step the runs are the same run). This is
  Song, Ahn and Yun's test. Training only: it compares training losses.
- ``final``: switched on for the last ``PROJECTED_FINAL_SHARE`` of the study's ``EPOCHS``, the original's
  proposal, with every per-step instrument on (the spectrum over the last steps, sharpness, equal-loss
  curvature). Its plain-SGD baseline is the original study's run ``<results>/sgd/seed<k>/`` (planned here,
  and skipped when complete), which trains identically up to the start step.
- ``refresh``: the early regime again with V refreshed every R steps for the other R in
  ``PROJECTED_REFRESH_GRID``, for ``PROJECTED_REFRESH_LAMS`` and ``PROJECTED_REFRESH_SEEDS``: does the
  result depend on R, and what does R cost.

A run goes to ``<results>/projected/<group>/<optimizer>-<setting>/seed<k>/`` (``runs.run_dir_for``), with
its settings in its config, so that ``python -m minima projected`` resumes and skips like ``run`` does.
"""

import math

import params
from minima import optimizers, runs
from minima.cli import add_run_options, seed_arg
from minima.config import make_config
from minima.data import load_mnist
from minima.runner import run_configs

EXPERIMENT = "projected"
GROUPS = ("check", "early", "final", "refresh")


def steps_per_epoch(data_source=None, data_dir=None, *, smoke=False, batch_size=None, dataset=None) -> int:
    """Optimizer steps per epoch of the data a run would load (the start steps are counted in them)."""
    smoke_cfg = params.SMOKE if smoke else {}
    data = load_mnist(data_source or params.DATA_SOURCE, data_dir, train_size=smoke_cfg.get("train_size"),
                      test_size=smoke_cfg.get("test_size"), verbose=False, dataset=dataset)
    return math.ceil(len(data.y_train) / (batch_size or params.BATCH_SIZE))


def final_start_step(epochs, per_epoch, share=None) -> int:
    """The step after which the last ``share`` of ``epochs`` x ``per_epoch`` steps is taken (at least one)."""
    share = params.PROJECTED_FINAL_SHARE if share is None else share
    total = epochs * per_epoch
    return total - max(1, round(share * total))


def plan(groups=GROUPS, seeds=None, *, lams=None, smoke=False, results_dir=None, data_source=None,
         data_dir=None, per_epoch=None) -> list[dict]:
    """The validated configs of the experiment's ``groups`` (raises StudyError on bad input).

    ``per_epoch``: the steps per epoch, when known (else counted from the data, ``steps_per_epoch``).
    """
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise runs.StudyError(f"unknown group {', '.join(map(repr, unknown)) or '(none)'}; "
                              f"valid choices: {', '.join(GROUPS)}")
    seeds = list(params.PROJECTED_SEEDS if seeds is None else seeds)
    lams = [float(x) for x in (params.PROJECTED_LAMS if lams is None else lams)]
    if not seeds or not lams:
        raise runs.StudyError("the experiment needs at least one seed and one lam")
    per_epoch = per_epoch or steps_per_epoch(data_source, data_dir, smoke=smoke)
    epochs = params.SMOKE["epochs"] if smoke else params.EPOCHS
    early_epochs = params.SMOKE["epochs"] if smoke else params.PROJECTED_EARLY_EPOCHS
    half = optimizers.get("sgd").defaults["lr"] / 2
    common = dict(smoke=smoke, data_source=data_source, data_dir=data_dir, results_dir=results_dir)
    train_only = dict(tracking=False, final_analysis=False)

    def config(group, optimizer, seed, overrides, **kw):
        return make_config(optimizer, seed, overrides=overrides, experiment=f"{EXPERIMENT}/{group}", **common, **kw)

    configs = []
    for group in GROUPS:  # cheapest first: the built-in check, then the short runs
        if group not in groups:
            continue
        for seed in seeds if group != "refresh" else params.PROJECTED_REFRESH_SEEDS:
            if group == "check":
                configs += [config(group, "projected", seed, {"lam": 0.5, "start_step": 0}, epochs=early_epochs,
                                   **train_only),
                            config(group, "sgd", seed, {"lr": half}, epochs=early_epochs, **train_only)]
            elif group == "early":
                configs += [config(group, "sgd", seed, {}, epochs=early_epochs, **train_only)]
                configs += [config(group, "projected", seed, {"lam": lam, "start_step": per_epoch},
                                   epochs=early_epochs, **train_only) for lam in lams]
            elif group == "final":
                start = final_start_step(epochs, per_epoch)
                configs += [make_config("sgd", seed, **common)]  # the original study's run
                configs += [config(group, "projected", seed, {"lam": lam, "start_step": start}, epochs=epochs,
                                   final_analysis=False) for lam in lams]
            else:
                configs += [config(group, "projected", seed, {"lam": float(lam), "start_step": per_epoch,
                                                              "refresh_every": r},
                                   epochs=early_epochs, **train_only)
                            for r in params.PROJECTED_REFRESH_GRID if r != params.PROJECTED["refresh_every"]
                            for lam in params.PROJECTED_REFRESH_LAMS]
    return configs


def cmd_projected(args) -> int:
    configs = plan(args.groups, args.seeds, smoke=args.smoke, results_dir=args.results_dir,
                   data_source=args.data_source, data_dir=args.data_dir)
    print(f"the projected-update experiment: {len(configs)} runs ({', '.join(args.groups)})")
    return run_configs(configs, jobs=args.jobs, threads=args.threads, force=args.force, quiet=args.quiet)


def add_parser(sub, default_results) -> None:
    p = sub.add_parser("projected", help="the projected-update experiment (minima/projected_study.py)")
    p.add_argument("--groups", nargs="+", default=list(GROUPS), metavar="GROUP",
                   help=f"any of: {', '.join(GROUPS)} (default: all)")
    p.add_argument("--seeds", nargs="+", type=seed_arg, help="default: params.PROJECTED_SEEDS")
    add_run_options(p, default_results)
    p.set_defaults(func=cmd_projected)
