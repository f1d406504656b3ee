"""The training loop shared by every optimizer in the registry, and the per-epoch evaluation.

``minima.optimizers`` says how each optimizer builds and steps (plain
backward, AdaHessian's ``create_graph``, SAM's two passes). The loop
checkpoints each epoch into the run folder and resumes from it, and calls
optional per-step and per-epoch callbacks (the curvature tracking plugs in there).
"""

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import params
from cnn_architectures import LeNet5
from minima import optimizers, runs, schema
from minima.data import Dataset


def build_model(seed, device="cpu", activation=params.ACTIVATION) -> LeNet5:
    """LeNet5 with weights drawn from ``seed``, so that the same seed gives the same start."""
    torch.manual_seed(seed)
    return LeNet5(params.NUM_CLASSES, activation=activation).to(device)


def batch_loss(model, x, y) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def training_step(model, optimizer, x, y, name="sgd", loss_fn=batch_loss) -> torch.Tensor:
    """One step of the named optimizer on the batch, as its registry entry says; returns the loss (detached)."""
    return optimizers.get(name).step(model, optimizer, loss_fn, x, y)


def _grad_norm(model) -> float:
    grads = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else float("nan")


def evaluate(model, x, y, batch_size=params.EVAL_BATCH_SIZE, with_gradient=False) -> dict:
    """Mean loss and accuracy over (x, y) in large batches.

    With ``with_gradient`` the same pass also yields the full-batch gradient
    norm (the gradient of the mean loss over all of x), without touching ``.grad``.
    """
    was_training = model.training
    model.eval()
    n, total_loss, correct = len(y), 0.0, 0
    grads = [torch.zeros_like(p) for p in model.parameters()] if with_gradient else None
    with torch.set_grad_enabled(with_gradient):
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, reduction="sum")
            if with_gradient:
                for g, gb in zip(grads, torch.autograd.grad(loss, list(model.parameters()))):
                    g.add_(gb)
            total_loss += float(loss.detach())
            correct += int((logits.detach().argmax(1) == yb).sum())
    model.train(was_training)
    out = {"loss": total_loss / n, "accuracy": correct / n}
    if with_gradient:
        out["grad_norm"] = float(torch.sqrt(sum((g / n).pow(2).sum() for g in grads)))
    return out


def confusion(model, x, y, num_classes=params.NUM_CLASSES, batch_size=params.EVAL_BATCH_SIZE) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(y), batch_size)])
    model.train(was_training)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    matrix.index_put_((y.cpu(), pred.cpu()), torch.ones_like(y.cpu()), accumulate=True)
    per_class = (matrix.diag() / matrix.sum(1).clamp(min=1)).tolist()
    return {"accuracy": float(matrix.diag().sum() / matrix.sum()), "per_class_accuracy": per_class,
            "confusion_matrix": matrix.tolist()}


def train(model, config, data: Dataset, run_dir=None, callback=None, progress=True) -> dict:
    """Train ``model`` as ``config`` says; returns {"history", "status", "diverged_at"}.

    Per epoch: train/test loss and accuracy, the full-batch gradient norm over
    the training split, the last mini-batch's gradient norm (the original's
    measure) and wall time: ``step_time_s`` (the optimizer's steps alone),
    ``train_time_s`` (the steps and the callbacks) and ``epoch_time_s`` (with
    the evaluation). With a ``run_dir`` it writes ``history.csv`` and a
    checkpoint after every epoch, and resumes from that checkpoint. A
    non-finite loss stops the run with status ``diverged``.
    ``callback`` (one, or a list): ``callback(model, epoch=, step=, total_steps=)``
    runs after every step. A callback may also have ``bind(optimizer)``
    (called once, before the first step, so it can read the optimizer's
    state), ``on_epoch(model, row)`` (after each epoch's evaluation; ``row``
    is that epoch's history row) and ``state_dict``/``load_state_dict``
    (checkpointed with the run). An optimizer whose registry entry has an
    ``attach`` brings callbacks of its own (Projected SGD's eigenvector
    refresh): they run after the caller's, are checkpointed under their own
    key (so the caller's list may differ on resume) and, with a ``run_dir``,
    write their files there at the end (``save(run_dir)``).
    """
    name, seed = config["optimizer"], config["seed"]
    optimizer = optimizers.make_optimizer(name, model, config["hyperparameters"])
    callbacks = [] if callback is None else list(callback) if isinstance(callback, (list, tuple)) else [callback]
    attach = optimizers.get(name).attach
    owned = list(attach(optimizer, model, data, config)) if attach else []
    every = callbacks + owned
    for cb in every:
        if hasattr(cb, "bind"):
            cb.bind(optimizer)
    batch_size, epochs = config["batch_size"], config["epochs"]
    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps_per_epoch * epochs
    order = torch.Generator().manual_seed(seed)  # batch order: its own stream, saved with the checkpoint
    torch.manual_seed(seed)  # the global stream (AdaHessian's Rademacher probes)
    history, start_epoch = [], 1
    stop_loss, stop = config.get("stop_loss"), None  # the equal-loss stopping point, once reached
    checkpoint = Path(run_dir) / runs.CHECKPOINT if run_dir else None
    if checkpoint and checkpoint.exists():
        state = runs.load_checkpoint(checkpoint, map_location=data.x_train.device)
        model.load_state_dict(state["model"])
        optimizers.load_state_dict(optimizer, state["optimizer"])
        order.set_state(state["order_rng"])
        torch.set_rng_state(state["torch_rng"])
        for cb, cb_state in zip(callbacks, state["callback"] or []):
            if hasattr(cb, "load_state_dict"):
                cb.load_state_dict(cb_state)
        for cb, cb_state in zip(owned, state.get("owned", [])):
            cb.load_state_dict(cb_state)
        history, start_epoch, stop = state["history"], state["epoch"] + 1, state.get("stop")
        print(f"resuming {run_dir} after epoch {state['epoch']}")
    status, diverged_at = "ok", None
    bar = tqdm(total=total_steps, initial=(start_epoch - 1) * steps_per_epoch, disable=not progress,
               desc=f"{name} seed {seed}", unit="step", mininterval=2.0)
    model.train()
    for epoch in range(start_epoch, epochs + 1):
        t0 = time.perf_counter()
        step_time = 0.0  # the optimizer's steps alone, without the callbacks: what time to a target loss counts
        perm = torch.randperm(n, generator=order).to(data.y_train.device)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            t_step = time.perf_counter()
            loss = training_step(model, optimizer, data.x_train[idx], data.y_train[idx], name)
            step_time += time.perf_counter() - t_step
            step = (epoch - 1) * steps_per_epoch + i + 1
            if not torch.isfinite(loss):
                # the loss as a string: "nan" and "inf" are valid JSON that way
                status, diverged_at = "diverged", {"epoch": epoch, "step": step, "loss": str(float(loss))}
                break
            for cb in every:
                cb(model, epoch=epoch, step=step, total_steps=total_steps)
            bar.update(1)
        last_batch_grad_norm = _grad_norm(model)
        optimizer.zero_grad(set_to_none=True)  # AdaHessian's .grad holds a graph: free it before evaluating
        if status == "diverged":
            break
        train_time = time.perf_counter() - t0
        tr = evaluate(model, data.x_train, data.y_train, config["eval_batch_size"], with_gradient=True)
        te = evaluate(model, data.x_test, data.y_test, config["eval_batch_size"])
        row = {"epoch": epoch, "step": epoch * steps_per_epoch,
               "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
               "test_loss": te["loss"], "test_accuracy": te["accuracy"]}
        if data.y_val is not None:
            va = evaluate(model, data.x_val, data.y_val, config["eval_batch_size"])
            row.update(val_loss=va["loss"], val_accuracy=va["accuracy"])
        row.update(grad_norm_full=tr["grad_norm"], grad_norm_last_batch=last_batch_grad_norm,
                   step_time_s=step_time, train_time_s=train_time, epoch_time_s=time.perf_counter() - t0)
        history.append(schema.HISTORY.written(row))  # each row checked once, as it is made
        if stop_loss is not None and stop is None and row["train_loss"] < stop_loss:
            stop = {"row": dict(row), "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        for cb in every:
            if hasattr(cb, "on_epoch"):
                cb.on_epoch(model, row)
        bar.set_postfix(loss=f"{tr['loss']:.4f}", test_acc=f"{te['accuracy']:.4f}")
        if run_dir:
            runs.save_csv(Path(run_dir) / runs.HISTORY, history)
            runs.save_torch(checkpoint, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizers.state_dict(optimizer),
                "order_rng": order.get_state(), "torch_rng": torch.get_rng_state(), "history": history,
                "callback": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
                "owned": [cb.state_dict() for cb in owned], "stop": stop})
    bar.close()
    for cb in owned if run_dir else []:
        cb.save(run_dir)
    if run_dir and stop_loss is not None:
        save_stop_point(run_dir, stop_loss, stop)
    if status == "diverged":
        print(f"diverged: non-finite loss at epoch {diverged_at['epoch']}, step {diverged_at['step']}")
    return {"history": history, "status": status, "diverged_at": diverged_at}


def save_stop_point(run_dir, threshold, stop) -> None:
    """stop.json (the epoch end where the full training loss first fell below ``threshold``, with that epoch's
    losses and accuracies; ``reached`` false and the rest null when it never did) and, if reached, its weights
    as model_at_stop.pt: Jiang et al. 2020's stopping point, which compares networks at equal training loss."""
    row = (stop or {}).get("row", {})
    record = {"threshold": threshold, "reached": stop is not None}
    record |= {k: row.get(k) for k in ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")}
    if stop is not None:
        runs.save_torch(Path(run_dir) / runs.STOP_MODEL, stop["model"])
    runs.save_json(Path(run_dir) / runs.STOP, schema.STOP.written(record))


def finish_training(model, data: Dataset, outcome: dict, run_dir) -> dict:
    """Write final.json (accuracies, per-class accuracy, confusion matrix, status) and model.pt."""
    run_dir = Path(run_dir)
    # every declared key, a diverged run's accuracies and losses None
    final = dict.fromkeys(schema.FINAL.fields, None) | {
        "status": outcome["status"], "diverged_at": outcome["diverged_at"], "epochs_completed": len(outcome["history"])}
    if outcome["status"] == "ok":
        test, last = confusion(model, data.x_test, data.y_test), outcome["history"][-1]
        final.update(train_accuracy=last["train_accuracy"],  # the last epoch's evaluation saw these very weights
                     test_accuracy=test["accuracy"], test_per_class_accuracy=test["per_class_accuracy"],
                     test_confusion_matrix=test["confusion_matrix"],
                     train_loss=last["train_loss"], test_loss=last["test_loss"])
        runs.save_torch(run_dir / runs.MODEL, {k: v.cpu() for k, v in model.state_dict().items()})
    if not outcome["history"]:
        runs.save_csv(run_dir / runs.HISTORY, [])
    runs.save_json(run_dir / runs.FINAL, schema.FINAL.written(final))
    return final


def state_checksum(model) -> str:
    """A short fingerprint of the weights, for comparing runs bit for bit."""
    import hashlib
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:16]
