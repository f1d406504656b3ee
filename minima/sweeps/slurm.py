"""Executors for the three launchers, the Slurm job array's parameters, and the sbatch file it gets."""

import shlex
import sys

import submitit

from minima.runs import StudyError

LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 minutes) would kill every real run

# ---------------------------------------------------------------- Slurm defaults (each has a flag)
SLURM_PARTITION = None           # None: the cluster's default partition
SLURM_TIME_MIN = 240             # a full 150-epoch run with its Hessian analysis, with room to spare
SLURM_GPUS = 1
SLURM_CPUS = 4                   # also each job's torch thread count
SLURM_MEM_GB = 16
SLURM_REQUEUES = 3               # a run that reaches its time limit is requeued (and resumes) this often

LAUNCHERS = ("local", "slurm", "debug")



def slurm_parameters(name, *, partition=SLURM_PARTITION, time_min=SLURM_TIME_MIN, gpus=SLURM_GPUS,
                     cpus=SLURM_CPUS, mem_gb=SLURM_MEM_GB, max_parallel=None) -> dict:
    """The SlurmExecutor parameters of a sweep's job array."""
    for label, value, least in (("--time", time_min, 1), ("--cpus", cpus, 1), ("--gpus", gpus, 0)):
        if not isinstance(value, int) or value < least:
            raise StudyError(f"{label} must be an integer of at least {least}, got {value!r}")
    if mem_gb is not None and not (isinstance(mem_gb, (int, float)) and mem_gb > 0):
        raise StudyError(f"--mem-gb must be a positive number, got {mem_gb!r}")
    out = {"job_name": f"sweep-{name}", "time": time_min, "cpus_per_task": cpus}
    if partition:
        out["partition"] = partition
    if gpus:
        out["gpus_per_node"] = gpus
    if mem_gb is not None:
        out["mem"] = f"{mem_gb:g}GB"
    if max_parallel:
        out["array_parallelism"] = max_parallel
    return out


def sbatch_script(parameters, folder, n_runs) -> str:
    """The sbatch file submitit writes for this array (rendered here, so no cluster is needed to see it)."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit 1.5.4 is pinned in requirements.txt
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder, map_count=n_runs if n_runs > 1 else None,
                               **parameters)


def _make_executor(launcher, folder, slurm):
    if launcher == "local":
        ex = submitit.LocalExecutor(folder)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    elif launcher == "debug":
        ex = submitit.DebugExecutor(folder)
    else:
        ex = submitit.SlurmExecutor(folder, max_num_timeout=SLURM_REQUEUES)
        ex.update_parameters(**slurm)
    return ex
