"""How the choice of optimizer shapes the minimum LeNet5 finds: the study's package.

Run folders and their I/O
    runs (atomic writes, status, discovery, provenance), schema (each file's name and keys), errors (StudyError),
    lock
Configuration and data
    config (make_config, the device), data (MNIST as tensors), fashion (Fashion-MNIST from Debian's package),
    idx (IDX files, checksums, bounded downloads)
Training
    optimizers (the registry and each one's step), training (the loop, evaluation),
    tracking (the instruments tracked through training)
Curvature and landscapes (import nothing of the rest of this package: lift them out as they are)
    curvature (engine, eigenpairs, journal, stochastic) with its Krylov core krylov, spectrum_tracking (λ1, λ2
    over the last steps),
    subspace (the gradient's top-k share, outlier counts), preconditioning (P and the stability threshold
    from an optimizer's state), landscape (lines, planes, filter-normalised directions), measures
    (generalization measures: adaptive and PAC-Bayes sharpness, norms, margin)
Runs, sweeps, report
    analysis (a run's final-weights analysis), plots (one run's figures), notebooks (stamping, kernels),
    runner (headless runs), compare and findings (two studies, number by number and finding by finding),
    projected_study, flatness_study and measures_study (the experiments), sweeps (plan, jobs, slurm, launch,
    summary, cli), report (collection, statistics, tables, figures, fair, projected, build, facts)

``python -m minima`` is the command line. The study's three design-card
modules, ``params.py``, ``helpers.py`` and ``cnn_architectures.py``, sit at the
repository root beside this package, not in site-packages: importing the
package puts the root on ``sys.path`` (at its end) so that they resolve.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
