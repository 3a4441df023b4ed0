"""Linear probes (L2-regularised logistic regression) and binary classification metrics.

No scikit-learn: the probe is fitted with :func:`scipy.optimize.minimize` (L-BFGS-B) on the
exact loss and gradient, from a zero start, so it is deterministic.

Conventions
-----------
Features ``X`` are ``[n, d]``; binary labels ``y`` are ``[n]`` with values in ``{0, 1}``
(or bool); multi-hot labels ``Y`` are ``[n, P]``, one column per primitive. A probe is the
pair ``(w [d], b)`` acting on *raw* features: ``p(y = 1 | x) = sigmoid(x . w + b)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

from mcl.measures.arrays import as_binary, as_matrix
from mcl.measures.rank import auroc

__all__ = ["fit_logistic", "predict_proba", "f1_score", "probe_primitives"]


def fit_logistic(
    X: np.ndarray, y: np.ndarray, l2: float = 1e-2, max_iter: int = 200
) -> tuple[np.ndarray, float]:
    """Fit a binary L2-regularised logistic-regression probe.

    Features are standardised with the training mean and standard deviation (a feature
    with zero variance keeps scale 1, so it is merely centred); the model is fitted on the
    standardised features ``x~ = (x - mean) / scale`` by minimising

    ``(1/n) sum_i [log(1 + exp(s_i)) - y_i s_i] + (l2 / 2) ||v||^2``,   ``s_i = x~_i . v + c``

    (mean log-loss; the intercept ``c`` is not penalised) with L-BFGS-B from ``v = 0, c = 0``.
    The standardisation is then folded into the returned weights, so that the probe applies
    to raw features: ``w = v / scale``, ``b = c - mean . w``.

    Parameters
    ----------
    X : array ``[n, d]`` training features
    y : array ``[n]`` of 0/1 labels; both classes must be present
    l2 : penalty strength on the standardised-space weights ``v`` (per-sample convention,
        i.e. scale-free in ``n``)
    max_iter : L-BFGS-B iteration limit

    Returns
    -------
    (w, b) : ``w`` float64 ``[d]`` and ``b`` float, for raw features; use
        :func:`predict_proba`. The standardised-space weights are ``w * scale``.
    """
    X = as_matrix(X, "X", "2-D [n, d]")
    y = as_binary(y)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X and y disagree on n: {X.shape[0]} vs {y.shape[0]}")
    if y.all() or not y.any():
        raise ValueError("fit_logistic needs both classes in y")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    n, d = X.shape
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
    Z = (X - mean) / scale
    yf = y.astype(np.float64)

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v, c = theta[:d], theta[d]
        s = Z @ v + c
        loss = np.mean(np.logaddexp(0.0, s) - yf * s) + 0.5 * l2 * float(v @ v)
        r = (scipy.special.expit(s) - yf) / n
        grad = np.empty(d + 1)
        grad[:d] = Z.T @ r + l2 * v
        grad[d] = r.sum()
        return float(loss), grad

    res = scipy.optimize.minimize(
        loss_grad,
        np.zeros(d + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": int(max_iter)},
    )
    v, c = res.x[:d], float(res.x[d])
    w = v / scale
    b = c - float(mean @ w)
    return w, b


def predict_proba(model: tuple[np.ndarray, float], X: np.ndarray) -> np.ndarray:
    """Probability of the positive class, ``sigmoid(X w + b)``, float64 ``[n]``.

    ``model`` is the ``(w, b)`` returned by :func:`fit_logistic`; ``X`` is ``[n, d]`` raw
    features (standardisation is folded into ``w, b``).
    """
    w, b = model
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != np.shape(w)[0]:
        raise ValueError(f"X must be [n, {np.shape(w)[0]}], got shape {X.shape}")
    return scipy.special.expit(X @ np.asarray(w, dtype=np.float64) + float(b))


def f1_score(pred: np.ndarray, y: np.ndarray) -> float:
    """Binary F1 of the positive class, ``2 TP / (2 TP + FP + FN)``.

    ``pred`` and ``y`` are 0/1 (or bool) arrays ``[n]``. NaN when undefined, i.e. when there
    are neither true nor predicted positives (``2 TP + FP + FN = 0``).
    """
    p = as_binary(pred, "pred")
    y = as_binary(y)
    if p.shape != y.shape:
        raise ValueError(f"pred and y must have the same shape, got {p.shape} and {y.shape}")
    tp = int(np.sum(p & y))
    fp = int(np.sum(p & ~y))
    fn = int(np.sum(~p & y))
    den = 2 * tp + fp + fn
    return float("nan") if den == 0 else 2.0 * tp / den


def probe_primitives(
    X_train: np.ndarray,
    Y_train: np.ndarray,
    X_test: np.ndarray,
    Y_test: np.ndarray,
    names: Sequence[str] | None = None,
    l2: float = 1e-2,
    max_iter: int = 200,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """One linear probe per primitive: fit on train, score on test.

    Parameters
    ----------
    X_train, X_test : arrays ``[n_train, d]``, ``[n_test, d]`` of representations
    Y_train, Y_test : multi-hot labels ``[n_train, P]``, ``[n_test, P]``
    names : ``P`` primitive names (default ``"p0"``, ``"p1"``, ...)
    l2, max_iter : passed to :func:`fit_logistic`
    threshold : probability threshold for the F1 predictions

    Returns
    -------
    dict
        ``"per_primitive"``: ``{name: {"auroc", "f1", "n_pos_train", "n_pos_test", "n_test",
        "fitted", "scored"}}`` -- ``fitted`` is False (metrics NaN) when the training column
        has a single class; ``scored`` is True when the probe was fitted and the test column
        has both classes. ``"macro_auroc"``, ``"macro_f1"``: means over the scored
        primitives (NaN when none); ``"n_scored"``; ``"names"`` (in column order).
    """
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    Y_train = np.asarray(Y_train)
    Y_test = np.asarray(Y_test)
    if Y_train.ndim != 2 or Y_test.ndim != 2 or Y_train.shape[1] != Y_test.shape[1]:
        raise ValueError(f"Y_train and Y_test must be [n, P] with the same P, got {Y_train.shape} and {Y_test.shape}")
    if X_train.shape[0] != Y_train.shape[0] or X_test.shape[0] != Y_test.shape[0]:
        raise ValueError("X and Y disagree on the number of samples")
    P = Y_train.shape[1]
    names = [f"p{j}" for j in range(P)] if names is None else [str(s) for s in names]
    if len(names) != P:
        raise ValueError(f"got {len(names)} names for {P} primitives")
    per: dict[str, dict[str, Any]] = {}
    aucs, f1s = [], []
    for j, name in enumerate(names):
        ytr = as_binary(Y_train[:, j], "Y_train column")
        yte = as_binary(Y_test[:, j], "Y_test column")
        fitted = bool(ytr.any() and not ytr.all())
        both_test = bool(yte.any() and not yte.all())
        auc = f1 = float("nan")
        if fitted:
            model = fit_logistic(X_train, ytr, l2=l2, max_iter=max_iter)
            prob = predict_proba(model, X_test)
            auc = auroc(prob, yte)
            f1 = f1_score(prob >= threshold, yte)
        scored = fitted and both_test
        if scored:
            aucs.append(auc)
            f1s.append(f1)
        per[name] = {
            "auroc": auc,
            "f1": f1,
            "n_pos_train": int(ytr.sum()),
            "n_pos_test": int(yte.sum()),
            "n_test": int(yte.size),
            "fitted": fitted,
            "scored": scored,
        }
    return {
        "per_primitive": per,
        "macro_auroc": float(np.mean(aucs)) if aucs else float("nan"),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "n_scored": len(aucs),
        "names": names,
    }
