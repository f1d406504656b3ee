"""A run folder's files: their names, and the keys of the JSON files and columns of the CSV files, declared once.

``minima.runs`` (the folder's I/O) re-exports the names; this module imports
nothing of the package but its error, so every writer and reader can use it.
Writers pass every record through ``Schema.written`` (a key the schema lacks,
or a declared one left out, is an error before anything is saved); readers
and test fixtures take the names from here (``Schema.fields``, ``Schema.example``);
``Schema.readable`` checks a saved file against the declaration, with the
allowances that runs recorded before a key existed need (``legacy``).

Three kinds of field:
- ``fields``: written by every run now;
- ``legacy``: a subset of ``fields`` that runs recorded before it existed lack;
- ``conditional``: written only when a setting asks for it (a sweep's validation columns).
Nested JSON (``provenance``, ``full_data_top``, the batch sensitivity's rows) is
declared by ``nested``.
"""

from dataclasses import dataclass, field
from pathlib import Path

from minima.errors import StudyError

CONFIG_FILE, HISTORY_FILE, FINAL_FILE, MODEL_FILE = "config.json", "history.csv", "final.json", "model.pt"
SPECTRUM_FILE, SHARPNESS_FILE, CURVATURE_FILE = "spectrum.csv", "sharpness.csv", "curvature.json"
TRACKING_FILE, EQUAL_LOSS_FILE = "tracking.csv", "equal_loss.csv"
DENSITY_FILE, LANDSCAPE_FILE = "density.npz", "landscape.npz"
STOP_FILE, STOP_MODEL_FILE = "stop.json", "model_at_stop.pt"  # the equal-loss stopping point, when a run asks for one


@dataclass(frozen=True)
class Schema:
    file: str
    fields: tuple[str, ...]
    legacy: tuple[str, ...] = ()
    conditional: tuple[str, ...] = ()
    nested: dict = field(default_factory=dict)   # key -> Schema of the dict (or of each row of a list) it holds

    def _problems(self, keys, allow_legacy: bool) -> list[str]:
        keys = set(keys)
        required = set(self.fields) - (set(self.legacy) if allow_legacy else set())
        unknown = sorted(keys - set(self.fields) - set(self.conditional))
        missing = sorted(required - keys)
        return ([f"keys the schema lacks: {', '.join(unknown)}"] if unknown else []) + \
               ([f"declared keys left out: {', '.join(missing)}"] if missing else [])

    def check(self, keys, *, allow_legacy=False, where="") -> None:
        """Raise StudyError if ``keys`` are not this file's declared ones (``allow_legacy``: as an older run's)."""
        problems = self._problems(keys, allow_legacy)
        if problems:
            raise StudyError(f"{where or self.file}: {'; '.join(problems)} (minima.schema)")

    def written(self, record):
        """``record`` (a dict, or a list of row dicts), checked against the declaration, nested parts included."""
        rows = record if isinstance(record, list) else [record]
        for row in rows:
            self.check(row.keys(), where=f"{self.file} as written")
            for key, inner in self.nested.items():
                value = row.get(key)
                for part in value if isinstance(value, list) else [value] if isinstance(value, dict) else []:
                    inner.check(part.keys(), where=f"{self.file} as written, {key}")
        return record

    def readable(self, run_dir) -> None:
        """Check a saved file of ``run_dir`` (if present and not empty) as an older run may have written it."""
        import csv
        import json
        path = Path(run_dir) / self.file
        if not path.exists() or path.stat().st_size <= 1:
            return
        if path.suffix == ".json":
            record = json.loads(path.read_text())
            self.check(record.keys(), allow_legacy=True, where=str(path))
            for key, inner in self.nested.items():
                value = record.get(key)
                for part in value if isinstance(value, list) else [value] if isinstance(value, dict) else []:
                    inner.check(part.keys(), allow_legacy=True, where=f"{path}, {key}")
        else:
            with path.open() as f:
                self.check(next(csv.reader(f)), allow_legacy=True, where=str(path))

    def key(self, name: str) -> str:
        """``name``, after checking that this file declares it: readers name keys through this, so a key renamed
        in the schema fails where it is read instead of reading as missing."""
        if name not in self.fields and name not in self.conditional:
            raise KeyError(f"{self.file} declares no key {name!r} (minima.schema)")
        return name

    def keys(self, *names: str) -> tuple[str, ...]:
        return tuple(self.key(n) for n in names)

    def example(self, **values) -> dict:
        """A record for a test fixture: every given key must be declared; the rest are None."""
        self.check(set(values) | set(self.fields), where=f"{self.file} fixture")
        return {k: values.get(k) for k in (*self.fields, *(c for c in self.conditional if c in values))}


PROVENANCE = Schema("config.json provenance", ("versions", "device", "platform", "host", "git_commit", "started",
                                               "command"))
CONFIG = Schema(CONFIG_FILE, ("optimizer", "seed", "hyperparameters", "overrides", "epochs", "batch_size",
                              "eval_batch_size", "smoke", "model", "data", "hessian", "tracking", "landscape",
                              "final_analysis", "results_dir", "sweep", "experiment", "stop_loss", "provenance"),
                legacy=("final_analysis", "experiment", "stop_loss"), nested={"provenance": PROVENANCE})
FINAL = Schema(FINAL_FILE, ("status", "diverged_at", "epochs_completed", "train_accuracy", "test_accuracy",
                            "test_per_class_accuracy", "test_confusion_matrix", "train_loss", "test_loss"))
FULL_DATA_TOP = Schema("curvature.json full_data_top", (
    "n_samples", "eigenvalues", "residuals", "converged", "certified_in", "n_hvps", "n_hvps_float64", "guard",
    "time_s", "n_hvps_replayed", "n_outliers", "outlier_rule"),
    legacy=("n_hvps_float64", "guard", "time_s", "n_hvps_replayed"))
SENSITIVITY = Schema("curvature.json batch_sensitivity", (
    "batch", "n_samples", "lambda1", "lambda2", "residual1", "residual2", "converged", "certified_in", "guard",
    "trace", "trace_stderr", "trace_samples", "time_s"), legacy=("certified_in", "guard", "time_s"))
CURVATURE = Schema(CURVATURE_FILE, (
    "hessian_batch_size", "top_eigenvalues", "residuals", "n_hvps", "n_hvps_float64", "converged", "certified_in",
    "guard", "gap", "ratio", "pyhessian", "trace", "density_n_hvps", "full_data_top", "batch_sensitivity", "time_s",
    "analysis_git_commit", "peak_rss_mib"),
    legacy=("guard", "time_s", "analysis_git_commit", "peak_rss_mib"),
    nested={"full_data_top": FULL_DATA_TOP, "batch_sensitivity": SENSITIVITY})
HISTORY = Schema(HISTORY_FILE, ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                                "grad_norm_full", "grad_norm_last_batch", "step_time_s", "train_time_s",
                                "epoch_time_s"),
                 legacy=("step_time_s",), conditional=("val_loss", "val_accuracy"))
SPECTRUM = Schema(SPECTRUM_FILE, ("epoch", "step", "lambda1", "lambda2", "gap", "ratio", "residual1", "residual2",
                                  "n_hvps", "n_hvps_float64", "converged", "certified_in"))
SHARPNESS = Schema(SHARPNESS_FILE, ("epoch", "step", "lambda1", "residual1", "n_hvps", "n_hvps_float64",
                                    "converged", "certified_in"))
TRACKING = Schema(TRACKING_FILE, ("epoch", "step", "lambda1", "lambda_k", "precond_lambda1", "threshold",
                                  "precond_ratio", "overlap_hessian_batch", "overlap_last_batch", "k", "converged",
                                  "certified_in", "n_hvps"))
EQUAL_LOSS = Schema(EQUAL_LOSS_FILE, ("loss_threshold", "epoch", "step", "train_loss", "test_accuracy", "lambda1",
                                      "precond_lambda1", "threshold", "trace", "trace_stderr", "trace_samples",
                                      "converged", "certified_in"))

STOP = Schema(STOP_FILE, ("threshold", "reached", "epoch", "step", "train_loss", "train_accuracy", "test_loss",
                          "test_accuracy"))

SCHEMAS = (CONFIG, FINAL, CURVATURE, HISTORY, SPECTRUM, SHARPNESS, TRACKING, EQUAL_LOSS, STOP)

# The flatness study's files, in <results>/measures/ (minima/measures_study.py): one row per model and stopping
# point (each also saved alone under rows/), the scores drawn from them (minima/report/flatness.py), and the
# sensitivity check that chose the adaptive radii.
MEASURES_FILE, RHO_CHECK_FILE, SCORES_FILE = "measures.csv", "rho_sensitivity.csv", "scores.csv"
MEASURES = Schema(MEASURES_FILE, (
    "run", "stop", "dataset", "optimizer", "lr", "batch_size", "seed", "experiment", "epoch", "train_loss",
    "test_loss", "train_accuracy", "test_accuracy", "gap_error", "gap_loss", "lambda1", "trace", "trace_se",
    "sqrt_diag_trace", "sqrt_diag_trace_se", "adaptive_worst", "adaptive_average", "adaptive_average_se",
    "pac_bayes_sigma", "pac_bayes_flatness", "random_direction", "weight_norm", "distance_from_init", "margin",
    "rho_worst", "rho_average", "code_commit"))
SCORES = Schema(SCORES_FILE, ("statistic", "population", "gap", "measure", "group", "value", "low", "high", "n"))
RHO_CHECK = Schema(RHO_CHECK_FILE, ("run", "optimizer", "pac_bayes_sigma", "rho", "worst", "worst_rounding",
                                    "average", "average_se", "code_commit"))
