"""One run as a submitit job, and what a finished job's outcome was.

The job sets its environment (thread counts, GPUs), streams the notebook's
output into the run's ``job.log``, and calls ``minima.runner.execute_run``,
which holds the run's lock (with its heartbeat) for as long as it executes.
"""

import contextlib
import logging
import os
import re
import socket
import time

import submitit

from minima.lock import RunLock
from minima.runner import execute_run
from minima.runs import ERROR, JOB_LOG, StudyError, ensure_writable, is_done, run_dir_for


@contextlib.contextmanager
def _notebook_log(path):
    """Append papermill's stream of the notebook's output to ``path`` (the run's job.log)."""
    logger = logging.getLogger("papermill")
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:  # an unwritable run folder: execute_run reports it
        yield logger
        return
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


class SweepJob(submitit.helpers.Checkpointable):
    """One run as a submitit job: set the job's environment, then ``execute_run(config)``.

    ``environment`` maps variable -> value (None unsets it): thread counts, so
    that parallel jobs share the cores, and the GPUs the launcher saw. Being
    Checkpointable, a Slurm job that reaches its time limit is requeued with
    the same config, and the run resumes from its last epoch checkpoint.
    """

    def __init__(self, environment=None):
        self.environment = dict(environment or {})

    def __call__(self, config) -> str:
        for key, value in self.environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        run_dir = run_dir_for(config)
        with contextlib.suppress(OSError):
            run_dir.mkdir(parents=True, exist_ok=True)
        try:
            job_id = submitit.JobEnvironment().job_id
        except RuntimeError:  # called outside submitit
            job_id = "none"
        t0 = time.time()
        settings = " ".join(f"{k}={v}" for k, v in self.environment.items() if v is not None)
        ensure_writable(run_dir)  # an unwritable folder raises here, and submitit reports its line
        try:  # held for the whole job: a second task of the same run (a relaunch, a requeue) is refused
            lock = RunLock(run_dir).acquire()
        except StudyError as e:
            return f"failed: {e}"
        os.environ[RunLock.ENV] = lock.token
        try:
            with _notebook_log(run_dir / JOB_LOG) as log:
                log.info(f"=== job {job_id} on {socket.gethostname()}, pid {os.getpid()}, "
                         f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {settings}")
                try:
                    outcome = execute_run(config, progress=False, log_output=True)
                except Exception:
                    log.exception("=== the job raised")
                    raise
                log.info(f"=== {outcome} after {time.time() - t0:.0f} s")
        finally:
            os.environ.pop(RunLock.ENV, None)
            lock.release()
        return outcome


def _failure_line(error: Exception) -> str:
    """The line that says what went wrong, out of submitit's error (which wraps the job's traceback)."""
    text = str(error).strip()
    if "with trace:" in text:  # FailedJobError: the traceback sits between two rules
        parts = text.split("----------------------")
        lines = [ln for ln in (parts[1] if len(parts) > 1 else text).splitlines() if ln.strip()]
        return lines[-1].strip() if lines else text
    state = re.search(r"has not produced any output \(state: ([^)]*)\)", text)
    if state:  # killed by the scheduler: out of memory, cancelled, node failure
        return f"the job ended without a result (state: {state.group(1)}); relaunch to resume it"
    return text.splitlines()[0] if text else type(error).__name__


def job_outcome(job) -> str:
    """done, diverged, skipped or ``failed: <why>`` for a finished job."""
    if isinstance(job, submitit.LocalJob) and not job.paths.result_pickle.exists():
        return (f"failed: the job ended without a result (killed?); its logs: {job.paths.stdout.parent}; "
                f"relaunch to resume it")
    try:
        return job.result()
    except submitit.core.utils.UncompletedJobError as e:  # the job raised, timed out or died
        return "failed: " + _failure_line(e)
    except Exception as e:  # noqa: BLE001 - the debug executor re-raises the run's own exception
        return f"failed: {type(e).__name__}: {e}"


def _held(run_dir) -> bool:
    """Whether a live process holds the run (then its failure line belongs to that run, not to this job)."""
    lock = RunLock(run_dir)
    info = lock.holder()
    return info is not None and not lock.is_stale(info)


KILLED_GRACE_S = 10  # a killed job's processes may take this long to exit after its controller is seen dead


def _record_failure(run_dir, outcome):
    """Leave the failure in the run folder (error.txt) when the run could not, so that status shows it.

    A job that ended without a result was killed: SIGKILL returns before its
    process has exited, so the lock's holder may look alive for a moment
    after the controller is seen dead. It gets a few seconds to go.
    """
    if "ended without a result" in outcome:
        deadline = time.time() + KILLED_GRACE_S
        while _held(run_dir) and time.time() < deadline:
            time.sleep(0.1)
    if outcome.startswith("failed") and run_dir.is_dir() and not is_done(run_dir) \
            and not (run_dir / ERROR).exists() and not _held(run_dir):
        with contextlib.suppress(OSError):
            (run_dir / ERROR).write_text(outcome.removeprefix("failed: ") + "\n")
