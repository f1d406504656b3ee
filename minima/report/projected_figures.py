"""The projected-update experiment's figure: training loss per lambda in both regimes, and lambda1 near the end."""

import numpy as np
import pandas as pd

from minima.report.projected_collection import BASE, _group, _settings


def loss_curves(found, group) -> pd.DataFrame:
    """Long frame: group, setting, seed, step, train_loss (the per-epoch full-batch loss)."""
    parts = [r["history"][["step", "train_loss"]].assign(setting=r["setting"], seed=r["seed"])
             for r in _group(found, group)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["step", "train_loss", "setting",
                                                                                   "seed"])


def _band(ax, curves, setting, color, style="-"):
    """Geometric mean over seeds of the training loss against the step, with the seeds' range shaded."""
    c = curves[curves.setting == setting]
    wide = c.pivot_table(index="step", columns="seed", values="train_loss")
    logs = np.log(wide.clip(lower=1e-12))
    ax.plot(wide.index, np.exp(logs.mean(axis=1)), style, color=color, lw=1.4,
            label=f"{setting} ({wide.shape[1]} seed{'s' if wide.shape[1] != 1 else ''})")
    if wide.shape[1] > 1:
        ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=color, alpha=0.15, lw=0)


def _colors(members) -> dict:
    """One viridis colour per λ setting of a group, in table order."""
    import matplotlib.pyplot as plt

    lams = [s for s in _settings(members) if s.startswith("λ=")]
    return dict(zip(lams, plt.cm.viridis(np.linspace(0, 0.9, max(1, len(lams))))))


def plot_projected(found, figsize=(13, 4.2)):
    """Training loss against steps per λ, both regimes, with seed bands; and the final regime's λ1 near the end.

    Plain SGD is black, λ = 0.5 (SGD at half the step) grey dashed; the dotted line is the switch-on step.
    """
    import matplotlib.pyplot as plt

    groups = [g for g in ("early", "final") if _group(found, g)]
    fig, axes = plt.subplots(1, len(groups) + ("final" in groups), figsize=figsize, squeeze=False)
    axes = list(axes[0])
    for ax, group in zip(axes, groups):
        curves, members = loss_curves(found, group), _group(found, group)
        starts = sorted({r["start_step"] for r in members if r["optimizer"] == "projected"})
        if group == "final" and starts:  # the end of training: from two switch-on lengths before the end
            curves = curves[curves.step >= starts[0] - 2 * (curves.step.max() - starts[0])]
        colors = _colors(members)
        for setting in _settings(members):
            if setting == BASE:
                _band(ax, curves, setting, "black", "--")
            elif setting in colors:
                _band(ax, curves, setting, colors[setting])
        for s in starts:
            ax.axvline(s, color="grey", ls=":", lw=1)
        ax.set(yscale="log", xlabel="step", ylabel="full-batch training loss",
               title=f"{group} regime: switched on at step {', '.join(map(str, starts))}")
        ax.legend(fontsize="x-small")
    if "final" in groups:
        ax = axes[-1]
        members = _group(found, "final")
        colors = _colors(members)
        for setting in _settings(members):
            spectra = [r["spectrum"] for r in members if r["setting"] == setting and r["spectrum"] is not None]
            if not spectra:
                continue
            s = pd.concat(spectra).groupby("step").lambda1
            color = "black" if setting == BASE else colors[setting]
            ax.plot(s.mean().index, s.mean(), "--" if setting == BASE else "-", color=color, lw=1.2, label=setting)
            ax.fill_between(s.min().index, s.min(), s.max(), color=color, alpha=0.12, lw=0)
        ax.set(yscale="log", xlabel="step", ylabel=r"$\lambda_1$ (Hessian batch)",
               title="final regime: top eigenvalue, last steps")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig
