"""Hyperparameter sweeps: optimizers x learning rates x seeds, run as submitit jobs, resumable.

    python -m minima sweep launch --name NAME [--optimizers sgd adam] [--seeds 0 1 2] [--lr-grid [VALUES | none]]
                            [--launcher local|slurm|debug] [--max-parallel N] [--smoke] [--epochs N]
                            [--partition P --time MIN --gpus N --cpus N --mem-gb G] [--dry-run]
    python -m minima sweep status --name NAME
    python -m minima sweep collect --name NAME

A sweep is a named set of runs. Each run is one ``execute_run(config)``,
the same notebook execution as ``python -m minima run``, with its overrides
recorded in its config and its folder at
``results/sweeps/<name>/<optimizer>-<override>/seed<k>/``. Sweep runs hold out
``params.VALIDATION_SIZE`` training samples, so that a learning rate is chosen
on validation accuracy and the test split stays untouched.

``sweep.json`` in the sweep folder lists the planned runs; launching again
submits only the runs without ``done`` (incomplete ones resume from their
checkpoint) and adds any new ones. Launchers: ``local`` (subprocesses on this
machine, at most N at once, the cores shared between them), ``slurm`` (one job
array; a job that reaches its time limit is requeued and resumes) and ``debug``
(in-process, one run after the other, for stepping through). Each run's log is
``job.log`` in its folder; submitit's own files are in ``results/sweeps/<name>/.submitit/``.
``collect`` writes the sweep's summary table through ``summary``.

Modules: ``plan`` (the runs of a sweep, its manifest and status), ``jobs``
(one run as a submitit job), ``slurm`` (executors and the sbatch file),
``launch`` (submitting and waiting), ``summary`` (the table), ``cli``.
"""

