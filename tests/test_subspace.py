"""subspace.py against independent computations: least-squares projections and matrices built
with a known spectrum."""

import numpy as np
import pytest
import torch

from minima import subspace

SHAPES = [(16, 8), (16,), (4, 16), (4,)]  # an 8 -> 16 -> 4 MLP's parameters: 212 entries


def like_parameters(v):
    """A flat vector as a list of tensors shaped like SHAPES."""
    sizes = [int(np.prod(s)) for s in SHAPES]
    return [t.view(s) for t, s in zip(torch.split(v, sizes), SHAPES)]


def test_subspace_overlap_inside_orthogonal_and_between():
    g = torch.Generator().manual_seed(6)
    B = torch.randn(212, 3, generator=g, dtype=torch.float64)  # three directions, not orthogonal
    vectors = [like_parameters(B[:, j]) for j in range(3)]
    vectors.append(like_parameters(2 * B[:, 0] - B[:, 1]))     # a dependent one must not count twice
    Q, _ = torch.linalg.qr(B)
    z = torch.randn(212, generator=g, dtype=torch.float64)
    inside = B @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    outside = z - Q @ (Q.T @ z)
    assert subspace.subspace_overlap(vectors, like_parameters(inside)) == pytest.approx(1.0, abs=1e-12)
    assert subspace.subspace_overlap(vectors, like_parameters(outside)) == pytest.approx(0.0, abs=1e-12)
    # in between: the squared norm of the least-squares projection onto span(B), over ||z||^2
    coef = np.linalg.lstsq(B.numpy(), z.numpy(), rcond=None)[0]
    expected = np.sum((B.numpy() @ coef) ** 2) / np.sum(z.numpy() ** 2)
    assert 0.001 < expected < 0.1
    assert subspace.subspace_overlap(vectors, like_parameters(z)) == pytest.approx(expected, rel=1e-10)
    # float32 vectors, as top_eigenpairs returns them for a float32 model, are welcome
    assert subspace.subspace_overlap([[t.float() for t in v] for v in vectors],
                                     like_parameters(inside)) == pytest.approx(1.0, abs=1e-6)


def test_subspace_overlap_rejects_bad_input():
    g = torch.randn(212, dtype=torch.float64)
    vectors = [like_parameters(torch.randn(212, dtype=torch.float64))]
    with pytest.raises(ValueError, match="shaped"):
        subspace.subspace_overlap(vectors, like_parameters(g)[:-1])
    with pytest.raises(ValueError, match="zero"):
        subspace.subspace_overlap(vectors, like_parameters(0 * g))
    with pytest.raises(ValueError, match="at least one"):
        subspace.subspace_overlap([], like_parameters(g))


def known_spectrum(eigenvalues, seed=2):
    """A dense symmetric matrix Q diag(eigenvalues) Q^T with a random orthogonal Q, and its computed spectrum."""
    d = len(eigenvalues)
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    A = Q @ np.diag(eigenvalues) @ Q.T
    return np.linalg.eigvalsh((A + A.T) / 2)


def test_count_outliers_on_a_known_spectrum():
    rng = np.random.default_rng(7)
    # 10 outliers (one per MNIST class, as in Papyan's spectra) over a bulk in [0, 1] and a few negatives
    spectrum = np.concatenate([rng.uniform(5.0, 40.0, 10), rng.uniform(0.0, 1.0, 80), rng.uniform(-0.5, 0.0, 10)])
    computed = known_spectrum(spectrum)
    assert np.allclose(np.sort(computed), np.sort(spectrum))  # the construction does what it says
    assert subspace.count_outliers(computed) == 10
    assert subspace.count_outliers(computed, top=14) == 10    # only the top 14, as a solver would give
    assert subspace.count_outliers(spectrum[::-1]) == 10      # order does not matter


def test_count_outliers_edge_cases():
    assert subspace.count_outliers(np.linspace(1.0, 1.05, 30), min_ratio=1.5) == 0  # a bulk alone
    assert subspace.count_outliers([9.0, 1.0, -30.0]) == 1  # non-positive eigenvalues take no part
    assert subspace.count_outliers([8.0, 4.0, 2.0, 1.0]) == 1  # equal ratios: the smaller count
    with pytest.raises(ValueError, match="two positive"):
        subspace.count_outliers([1.0, -2.0])
    with pytest.raises(ValueError, match="top"):
        subspace.count_outliers([3.0, 2.0, 1.0], top=1)
    with pytest.raises(ValueError, match="finite"):
        subspace.count_outliers([3.0, float("nan")])
