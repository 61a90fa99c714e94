"""Train small, or train large and prune? Least-squares models where the answer is computable.

The question (Chang, Li, Oymak, Thrampoulidis, "Provable Benefits of Overparameterization
in Model Compression", AAAI 2021, arXiv 2012.08749): to end up with a model of ``s``
weights, is it better to fit a small model on the ``s`` best features, or to fit a large
model on ``p >> s`` features and prune it to ``s``? Their answer for least squares and
random features: past the interpolation threshold ``p = n``, train-then-prune can win even
against an oracle that knows where the best features are, and the pruned model's risk,
seen as a function of ``p`` at fixed ``s``, shows its own double descent. This module
simulates both models, and gives analytic curves for the isotropic linear case.

Setup (linear model, :func:`simulate_linear`)
---------------------------------------------
* Features ``x ~ N(0, Sigma)`` in ``d`` dimensions, ``Sigma = diag(lambda_1..lambda_d)``:
  ``spectrum="isotropic"`` (all ones) or ``"power"`` (``lambda_j = j**-alpha``, rescaled
  so that ``mean(lambda) = 1``). With ``correlation = rho > 0`` the features are also
  correlated, ``Sigma = D^{1/2} C D^{1/2}`` with ``D = diag(lambda)`` and ``C`` either
  equicorrelated (``C_ij = rho`` for ``i != j``: one factor shared by every feature) or
  AR(1) (``C_ij = rho^|i-j|`` in the strength order: neighbours correlated)
  (:func:`feature_correlation`). The analytic curves below are for ``Sigma = I`` only,
  and with correlated features the oracle's "s best" are still the first s by marginal
  strength ``lambda_j beta_j^2``, no longer the best s-subset in general.
* Ground truth ``beta``: ``beta_profile="power"`` (``beta_j ~ j**-beta_decay``),
  ``"equal"`` or ``"sparse"`` (``n_nonzero`` equal entries, the rest zero), rescaled to the
  signal energy ``r^2 = beta' Sigma beta``. Label ``y = x' beta + eps``,
  ``eps ~ N(0, sigma^2)``. Features are sorted by strength ``lambda_j beta_j^2``, strongest
  first, so "the first p features" are the p strongest and the oracle's "s best features"
  are the first s.
* The model sees the first ``p`` features of ``n`` training samples and is fitted by
  min-norm least squares ``w = X_p^+ y`` (the OLS solution for ``p < n``, the min-norm
  interpolator for ``p > n``). Every ``p`` of one trial reuses the same samples (the first
  ``p`` columns of one ``n x d`` draw), so the curves over ``p`` are nested and smooth.
* Methods (the ``method`` column): ``dense`` (the p-feature fit); ``magnitude`` (keep its
  ``s`` largest ``|w_j|``, zero the rest); ``random`` (keep ``s`` coordinates drawn
  uniformly); ``magnitude+refit`` and ``random+refit`` (min-norm least squares again on
  the same ``n`` samples, restricted to the kept support); ``oracle`` (min-norm least
  squares on the ``s`` truly best features, i.e. the small model trained directly; it does
  not depend on ``p``). When ``p <= s`` nothing is pruned and all but ``oracle`` equal
  ``dense``.

Test risk is exact, not sampled. For a coefficient vector ``w`` on the first ``p``
features (``w_j = 0`` for ``j > p``) and a fresh ``(x, y)``::

    R(w) = E (y - x'w)^2 = (w - beta)' Sigma (w - beta) + sigma^2
         = sum_j lambda_j (w_j - beta_j)^2 + sigma^2     (diagonal Sigma)     (1)

because ``x`` is independent of ``eps`` and centred. So every risk in this module,
simulated or analytic, is the full prediction risk *including* the irreducible
``sigma^2`` (:func:`population_risk`; tests check it against a test-set estimate).

Random-features model (:func:`simulate_random_features`)
--------------------------------------------------------
Input ``z ~ N(0, I_k)``, teacher ``f(z) = z' theta`` with ``|theta|^2 = r^2`` (or any
callable), ``y = f(z) + eps``. Features ``phi(z) = ReLU(W z / sqrt(k))`` with ``W`` a fixed
pool of ``pool_size`` Gaussian rows, of which the model uses the first ``p`` (nested in
``p``). The second layer is fitted, pruned and refitted exactly as above. There are no
"true best features" here, so the baseline is the ``small`` model: min-norm least squares
on ``s`` random features (the first ``s`` of the pool). The risk is estimated on
``n_test`` fresh inputs as ``mean((f(z) - phi(z)'a)^2) + sigma^2``: the label noise is
added exactly rather than sampled, which removes its share of the Monte-Carlo error; the
rest has relative error about ``sqrt(2 / n_test)`` per trial.

Analytic curves (isotropic ``Sigma = I``)
-----------------------------------------
(2) Dense min-norm risk, Hastie, Montanari, Rosset, Tibshirani 2019 ("Surprises in
high-dimensional ridgeless least squares interpolation", Thm 1), ``gamma = p/n``::

    R - sigma^2 -> sigma^2 gamma / (1 - gamma)                      gamma < 1
    R - sigma^2 -> r^2 (1 - 1/gamma) + sigma^2 / (gamma - 1)          gamma > 1

  and the exact finite-``n`` expectation for Gaussian features, which this module uses
  when ``n`` is given (:func:`minnorm_risk_isotropic`)::

    E R - sigma^2 = sigma^2 p / (n - p - 1)                         p < n - 1
    E R - sigma^2 = r^2 (1 - n/p) + sigma^2 n / (p - n - 1)           p > n + 1

  from ``E (X'X)^{-1} = I/(n-p-1)`` (inverse-Wishart mean), ``E (XX')^{-1} = I/(p-n-1)``
  and ``X^+ X`` being a uniformly random rank-``n`` projection with mean ``(n/p) I``.

(3) Misspecification. The model sees ``p`` of ``d`` features. With ``Sigma = I`` the unseen
features are independent of the seen ones, so ``x_{>p}' beta_{>p}`` is just extra label
noise: the formulas of (2) hold with ``r_p^2 = sum_{j<=p} beta_j^2`` and
``sigma_p^2 = sigma^2 + sum_{j>p} beta_j^2``, and ``R = sigma_p^2 + excess``.

(4) Coordinates of the min-norm solution (the Gaussian-coordinate description; Chang et
al. characterise the min-norm solution's coordinates for general ``Sigma`` with the
convex Gaussian min-max theorem; what follows is the isotropic case, derived here directly
rather than copied from their theorem). Write ``w = P beta + X^+ eps`` with
``P = X^+ X``. For ``p > n`` ``P`` is a uniformly random rank-``n`` projection, so
``E P = (n/p) I`` and each coordinate is::

    w_j  ~  (n/p) beta_j + tau_j g_j,        g_j ~ N(0, 1)

    tau_j^2 = beta_j^2 [n(n+2)/(p(p+2)) - n^2/p^2]
              + (r_p^2 - beta_j^2) n(p-n) / (p(p-1)(p+2))
              + sigma_p^2 n / (p (p-n-1))

  (exact second moments: ``P_jj ~ Beta(n/2, (p-n)/2)`` and ``sum_k P_jk^2 = P_jj``; the
  noise part is rotation invariant with trace ``sigma_p^2 n/(p-n-1)``). As
  ``n, p -> inf`` this is ``tau^2 = [r^2 (1/gamma)(1 - 1/gamma) + sigma^2/(gamma-1)] / p``,
  the shrinkage factor and spread that reproduce (2): summing
  ``((1/gamma - 1) beta_j)^2 + tau^2`` over ``j`` gives ``r^2(1-1/gamma) + sigma^2/(gamma-1)``.
  For ``p < n`` the fit is unbiased, ``w_j ~ beta_j + tau g_j`` with
  ``tau^2 = sigma_p^2 / (n-p-1)`` (asymptotically ``sigma^2 gamma/(1-gamma)/p``). The
  Gaussian shape, and treating coordinates as independent, are the approximations; the
  means and variances are exact. The empirical ``beta`` is used as it is, sparse or not.

(5) Magnitude pruning without refit, predicted from (4) (:func:`magnitude_pruned_risk_isotropic`).
Keeping the ``s`` largest ``|w_j|`` is replaced by keeping ``|w_j| > t`` with the
threshold ``t`` solving ``sum_{j<=p} P(|w_j| > t) = s``. With ``m_j = E w_j``,
``c_j = m_j - beta_j``, ``a_+ = (t - m_j)/tau_j``, ``a_- = (-t - m_j)/tau_j``::

    E[(w_j - beta_j)^2 ; |w_j| > t] = c^2 [Q(a_+) + Phi(a_-)] + 2 c tau [phi(a_+) - phi(a_-)]
                                      + tau^2 [a_+ phi(a_+) + Q(a_+) + Phi(a_-) - a_- phi(a_-)]

    R_magnitude = sigma_p^2 + sum_{j<=p} ( E[(w_j - beta_j)^2 ; kept] + P(j pruned) beta_j^2 )

  (``phi``, ``Phi``, ``Q = 1 - Phi`` the standard normal pdf, cdf and tail). This is the
  one approximate curve; its error against simulation is measured in ``tests/test_theory.py``.

(6) Exact expectations for the other small models, from (2)-(3) (:func:`predict_linear_isotropic`):
  ``random`` keeps a support independent of ``w``, so
  ``R = sigma_p^2 + (s/p) (R_dense - sigma_p^2) + (1 - s/p) r_p^2``; ``random+refit`` is a
  least-squares fit on ``s`` random seen features, whose risk given the support is (2)-(3)
  with signal ``|beta_T|^2``, linear in it, so its mean uses ``E|beta_T|^2 = (s/p) r_p^2``;
  ``oracle`` is (2)-(3) on the first ``s`` features. ``magnitude+refit`` has no curve
  here: its support is chosen from the same samples it is refitted on, and that coupling
  is not derived here; only simulation covers it.

What the defaults show
----------------------
:func:`beats_oracle` lists the ``p/n`` where train-then-prune has a lower mean risk than
the oracle small model. With the defaults of :func:`simulate_linear` (power-law spectrum
and signal, ``s/n = 1/2``) magnitude pruning without refit beats the oracle once ``p/n``
is a few times past the threshold, while refitting on the kept support mostly gives the
gain back: with diagonal ``Sigma`` the refit is ordinary least squares on ``s`` features,
the very estimator the oracle uses, on a worse support. Chang et al. find refitting
helps more the more correlated the features; :func:`refit_benefit` measures that gain as
``rho`` grows and :func:`refit_judgements` judges it. The three claims of the paper
are judged by :func:`win_judgement` (over trials; :func:`wins_past_threshold` reads the
mean curves alone), :func:`double_descent_judgement` and
:func:`refit_judgements`, in the words of :func:`verdict`.
In the random-features model, magnitude pruning with refit beats the ``small`` model past
the threshold (and at most ``p > s`` below it too: choosing ``s`` of ``p`` random features
by magnitude beats taking ``s`` at random).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy import optimize, special

try:  # installed with scikit-learn; without it BLAS keeps its own thread count
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

METHODS = ("dense", "magnitude", "magnitude+refit", "random", "random+refit", "oracle")
RF_METHODS = ("dense", "magnitude", "magnitude+refit", "random", "random+refit", "small")
CRITERIA = ("magnitude", "random")
SPECTRA = ("isotropic", "power")
BETA_PROFILES = ("power", "equal", "sparse")
CORRELATION_STRUCTURES = ("equicorrelated", "ar1")
# How the sparse double descent is judged: a peak is "near the threshold" within this
# factor of p = n.
THRESHOLD_WINDOW = 1.5


# ---------------------------------------------------------------------------- linear model
@dataclass(frozen=True)
class LinearProblem:
    """A linear-Gaussian regression task: ``x ~ N(0, Sigma)``, ``y = x'beta + eps``.

    ``Sigma = diag(eigenvalues)`` when ``correlation`` is ``None``, else
    ``D^{1/2} correlation D^{1/2}`` with ``D = diag(eigenvalues)`` (the features' variances)
    and ``correlation`` their correlation matrix (:func:`feature_correlation`). Features
    are stored strongest first (by ``eigenvalues * beta**2``).
    """

    eigenvalues: np.ndarray
    beta: np.ndarray
    sigma2: float
    correlation: Optional[np.ndarray] = None

    @property
    def d(self) -> int:
        return len(self.beta)

    @property
    def covariance(self) -> np.ndarray:
        """``Sigma``, the features' covariance matrix (d x d)."""
        scale = np.sqrt(self.eigenvalues)
        if self.correlation is None:
            return np.diag(self.eigenvalues)
        return scale[:, None] * self.correlation * scale[None, :]

    @property
    def signal_energy(self) -> float:
        """``r^2 = beta' Sigma beta``."""
        if self.correlation is None:
            return float(np.sum(self.eigenvalues * self.beta ** 2))
        return float(self.beta @ self.covariance @ self.beta)

    def risk(self, coef: np.ndarray) -> np.ndarray:
        """Exact test risk (1) of coefficients on the first ``coef.shape[-1]`` features."""
        if self.correlation is None:
            return population_risk(coef, self.eigenvalues, self.beta, self.sigma2)
        error = -np.broadcast_to(self.beta, (*coef.shape[:-1], self.d)).copy()
        error[..., :coef.shape[-1]] += coef
        return np.einsum("...i,...i->...", error @ self.covariance, error) + self.sigma2

    def sample(self, n: int, trials: int, rng: np.random.Generator):
        """``trials`` independent training sets: ``X`` (trials, n, d) and ``y`` (trials, n).

        The draws are ``Z L' D^{1/2}`` with ``Z`` standard normal and ``L`` the Cholesky
        factor of the correlation matrix: the same ``rng`` gives the same ``Z`` whatever
        the correlation, so tasks that differ only in it share their random numbers.
        """
        X = rng.standard_normal((trials, n, self.d))
        if self.correlation is not None:
            X = X @ np.linalg.cholesky(self.correlation).T
        X = X * np.sqrt(self.eigenvalues)
        y = X @ self.beta + np.sqrt(self.sigma2) * rng.standard_normal((trials, n))
        return X, y


def feature_correlation(d: int, correlation: float, structure: str = "equicorrelated") \
        -> np.ndarray:
    """The features' correlation matrix (d x d) with parameter ``rho = correlation``.

    ``"equicorrelated"``: every pair of features has correlation ``rho``
    (``(1 - rho) I + rho 1 1'``, one factor shared by all features). ``"ar1"``: the
    Toeplitz matrix ``rho^|i - j|``, features correlated with their neighbours in the
    strength order and nearly independent of distant ones. ``rho = 0`` gives the identity.
    """
    if structure not in CORRELATION_STRUCTURES:
        raise ValueError(f"structure: {structure!r} is not allowed; allowed: "
                         f"{', '.join(CORRELATION_STRUCTURES)}")
    if not 0.0 <= correlation < 1.0:
        raise ValueError("correlation: need 0 <= correlation < 1")
    if structure == "equicorrelated":
        return (1.0 - correlation) * np.eye(d) + correlation
    index = np.arange(d)
    return correlation ** np.abs(index[:, None] - index[None, :]).astype(float)


def linear_problem(d: int, sigma2: float = 0.1, spectrum: str = "power",
                   alpha: float = 1.0, beta_profile: str = "power", beta_decay: float = 1.0,
                   n_nonzero: Optional[int] = None, r2: float = 1.0,
                   correlation: float = 0.0, structure: str = "equicorrelated") -> LinearProblem:
    """Build the task of the module docstring; features come out sorted strongest first.

    ``alpha``: decay of the ``"power"`` spectrum. ``beta_decay``: decay of the ``"power"``
    beta profile. ``n_nonzero``: support size of the ``"sparse"`` profile.
    ``correlation``, ``structure``: the features' correlation (:func:`feature_correlation`,
    applied in the strength order); ``beta`` is rescaled so that ``beta' Sigma beta = r2``
    whatever the correlation, so risks at different correlations are comparable.
    """
    if spectrum not in SPECTRA:
        raise ValueError(f"spectrum: {spectrum!r} is not allowed; allowed: {', '.join(SPECTRA)}")
    if beta_profile not in BETA_PROFILES:
        raise ValueError(f"beta_profile: {beta_profile!r} is not allowed; allowed: "
                         f"{', '.join(BETA_PROFILES)}")
    index = np.arange(1, d + 1, dtype=float)
    if spectrum == "isotropic":
        eigenvalues = np.ones(d)
    else:
        eigenvalues = index ** -alpha
        eigenvalues /= eigenvalues.mean()
    if beta_profile == "power":
        beta = index ** -beta_decay
    elif beta_profile == "equal":
        beta = np.ones(d)
    else:
        if n_nonzero is None or not 1 <= n_nonzero <= d:
            raise ValueError("n_nonzero: the sparse profile needs 1 <= n_nonzero <= d")
        beta = (index <= n_nonzero).astype(float)
    order = np.argsort(-(eigenvalues * beta ** 2), kind="stable")
    eigenvalues, beta = eigenvalues[order], beta[order]
    matrix = feature_correlation(d, correlation, structure) if correlation else None
    problem = LinearProblem(eigenvalues, beta, float(sigma2), matrix)
    return LinearProblem(eigenvalues, beta * np.sqrt(r2 / problem.signal_energy),
                         float(sigma2), matrix)


def population_risk(coef: np.ndarray, eigenvalues: np.ndarray, beta: np.ndarray,
                    sigma2: float) -> np.ndarray:
    """Exact ``E (y - x'w)^2`` of eq. (1); ``coef`` (..., p) covers the first p features."""
    p = coef.shape[-1]
    seen = np.sum(eigenvalues[:p] * (coef - beta[:p]) ** 2, axis=-1)
    return seen + np.sum(eigenvalues[p:] * beta[p:] ** 2) + sigma2


def _one_blas_thread(function):
    """Run ``function`` with single-threaded BLAS.

    The simulations make many small batched products and solves (100 x 500); BLAS threads
    only add synchronisation there, and on a busy machine their spinning makes a figure
    many times slower than one thread does.
    """
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if threadpool_limits is None:
            return function(*args, **kwargs)
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)
    return wrapper


@_one_blas_thread
def simulate_linear(n: int = 100, d: int = 500, s: int = 50,
                    p_values: Optional[Sequence[int]] = None, trials: int = 50,
                    sigma2: float = 0.1, spectrum: str = "power", alpha: float = 1.0,
                    beta_profile: str = "power", beta_decay: float = 1.0,
                    n_nonzero: Optional[int] = None, r2: float = 1.0, seed: int = 0,
                    problem: Optional[LinearProblem] = None, correlation: float = 0.0,
                    structure: str = "equicorrelated", per_trial: bool = False) -> pd.DataFrame:
    """Test risk of dense, pruned, refitted and oracle least squares as the model grows.

    Returns a tidy frame with columns ``p, p_over_n, method, risk_mean, risk_std, trials``
    (``risk_std`` over trials, ddof 1), one row per ``p`` and method of :data:`METHODS`;
    with ``per_trial`` the risks themselves, columns ``p, p_over_n, method, trial, risk``
    (:func:`summarise` turns them into the first frame; :func:`win_judgement` pairs them).
    ``p_values`` defaults to :func:`default_p_values`. ``problem`` overrides the task
    arguments (``correlation`` and ``structure`` among them, :func:`linear_problem`). The
    same ``seed`` gives the same frame; the training data of a trial do not depend on
    ``p_values``.

    The defaults (``s/n = 1/2``, power-law spectrum and signal, ``sigma^2 = 0.1``) are a
    setting where the question has an interesting answer: the oracle small model pays
    the variance of least squares at ``s/n = 1/2``, and the pruned min-norm model, whose
    many weak features regularise the strong ones, beats it for large enough ``p/n``
    (:func:`beats_oracle` says where). For the analytic curves use ``spectrum="isotropic"``.
    """
    if problem is None:
        problem = linear_problem(d, sigma2, spectrum, alpha, beta_profile, beta_decay,
                                 n_nonzero, r2, correlation, structure)
    p_values = default_p_values(n, problem.d) if p_values is None else p_values
    risks = _linear_trial_risks(problem, n, s, p_values, trials, seed)
    return _risk_frame(risks, n, METHODS, per_trial)


def _linear_trial_risks(problem: LinearProblem, n: int, s: int, p_values: Sequence[int],
                        trials: int, seed: int) -> dict[int, dict[str, np.ndarray]]:
    """Per-trial risks (trials,) of every method of :data:`METHODS` at every ``p``."""
    d = problem.d
    p_values = np.asarray(p_values, int)
    if p_values.min() < 1 or p_values.max() > d:
        raise ValueError(f"p_values: need 1 <= p <= d = {d}")
    if not 1 <= s <= d:
        raise ValueError(f"s: need 1 <= s <= d = {d}")
    X, y = problem.sample(n, trials, np.random.default_rng((seed, 0)))
    oracle = minnorm_least_squares(X[..., :s], y)  # the first s features are the best
    oracle_risk = problem.risk(oracle)
    risks = {}
    for p in p_values:
        coefs = train_then_prune(X[..., :p], y, s, np.random.default_rng((seed, 1, int(p))))
        risks[int(p)] = {name: problem.risk(coef) for name, coef in coefs.items()}
        risks[int(p)]["oracle"] = oracle_risk
    return risks


@_one_blas_thread
def refit_benefit(correlations: Sequence[float], p_values: Sequence[int], n: int = 100,
                  d: int = 500, s: int = 50, trials: int = 50, sigma2: float = 0.1,
                  spectrum: str = "power", structure: str = "equicorrelated",
                  criterion: str = "magnitude", seed: int = 0) -> pd.DataFrame:
    """What refitting after pruning gains, per trial, as the features grow correlated.

    For each ``correlation`` (``rho`` of :func:`feature_correlation` with ``structure``)
    and each ``p``: min-norm least squares on the first ``p`` features, pruned to ``s``
    by ``criterion``, evaluated without refit and with a least-squares refit on the kept
    support. ``benefit = risk without refit - risk with refit`` (positive: refitting
    helps), in the same units at every ``rho`` because the signal energy
    ``beta' Sigma beta`` is held at 1. Every ``rho`` uses the same ``seed`` and so the same
    standard-normal draws (:meth:`LinearProblem.sample`): the differences between
    correlations are paired trial by trial, which is what :func:`grows` needs.

    Returns a tidy per-trial frame: ``structure, correlation, p, p_over_n, trial,
    risk_pruned, risk_refit, benefit``.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: {criterion!r} is not allowed; allowed: {', '.join(CRITERIA)}")
    frames = []
    for correlation in correlations:
        problem = linear_problem(d, sigma2, spectrum, correlation=float(correlation),
                                 structure=structure)
        risks = _linear_trial_risks(problem, n, s, p_values, trials, seed)
        for p, per_method in risks.items():
            pruned, refit = per_method[criterion], per_method[criterion + "+refit"]
            frames.append(pd.DataFrame({
                "structure": structure, "correlation": float(correlation), "p": p,
                "p_over_n": p / n, "trial": np.arange(trials), "risk_pruned": pruned,
                "risk_refit": refit, "benefit": pruned - refit}))
    return pd.concat(frames, ignore_index=True)


def default_p_values(n: int, d: int, count: int = 30) -> np.ndarray:
    """About ``count`` model sizes, geometric from ``n/10`` to ``d``."""
    return np.unique(np.round(np.geomspace(max(1, n // 10), d, count)).astype(int))


def train_then_prune(features: np.ndarray, y: np.ndarray, s: int,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fit min-norm least squares on all ``features``, prune to ``s``, refit on the support.

    ``features`` (trials, n, p), ``y`` (trials, n). Returns coefficients (trials, p) for
    ``dense``, each criterion of :data:`CRITERIA`, and ``<criterion>+refit``; pruned
    coefficients are exactly zero off the support.
    """
    dense = minnorm_least_squares(features, y)
    coefs = {"dense": dense}
    for criterion in CRITERIA:
        mask = prune_mask(dense, s, criterion, rng)
        coefs[criterion] = np.where(mask, dense, 0.0)
        kept = min(s, dense.shape[-1])
        support = np.nonzero(mask)[-1].reshape(*mask.shape[:-1], kept)
        refit = minnorm_least_squares(np.take_along_axis(features, support[..., None, :], -1), y)
        coefs[criterion + "+refit"] = np.zeros_like(dense)
        np.put_along_axis(coefs[criterion + "+refit"], support, refit, -1)
    return coefs


def prune_mask(coef: np.ndarray, s: int, criterion: str, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask keeping exactly ``min(s, p)`` coordinates of each row of ``coef`` (..., p).

    ``magnitude`` keeps the largest ``|coef|``; ``random`` a uniformly drawn subset.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: {criterion!r} is not allowed; allowed: {', '.join(CRITERIA)}")
    p = coef.shape[-1]
    if s >= p:
        return np.ones(coef.shape, bool)
    score = np.abs(coef) if criterion == "magnitude" else rng.random(coef.shape)
    keep = np.argpartition(-score, s - 1, axis=-1)[..., :s]
    mask = np.zeros(coef.shape, bool)
    np.put_along_axis(mask, keep, True, -1)
    return mask


def minnorm_least_squares(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Batched ``features^+ y``: OLS when p < n, the min-norm interpolator when p > n.

    ``features`` (..., n, p), ``y`` (..., n). Solves the normal equations of the smaller
    Gram matrix (``w = X'(XX')^{-1} y`` for p >= n, ``(X'X)^{-1} X'y`` otherwise): one
    matrix product and an LU solve, far cheaper than a batched SVD. Its error grows like
    ``cond(X)^2`` machine epsilons; for the Gaussian and ReLU random-feature designs here
    (``cond(X)`` up to about 1e4 at ``p = n``) it stays within 1e-8 of ``lstsq``. A trial
    whose Gram matrix is exactly singular falls back to ``lstsq``.
    """
    n, p = features.shape[-2:]
    wide = p >= n
    transposed = np.swapaxes(features, -1, -2)
    gram = features @ transposed if wide else transposed @ features
    rhs = y if wide else np.einsum("...np,...n->...p", features, y)
    try:
        solution = np.linalg.solve(gram, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return _pinv_rows(features, y)
    return np.einsum("...np,...n->...p", features, solution) if wide else solution


def _pinv_rows(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    flat_x = features.reshape(-1, *features.shape[-2:])
    flat_y = y.reshape(-1, y.shape[-1])
    coef = np.stack([np.linalg.lstsq(x, t, rcond=None)[0] for x, t in zip(flat_x, flat_y)])
    return coef.reshape(*features.shape[:-2], features.shape[-1])


# --------------------------------------------------------------- random-features model
@_one_blas_thread
def simulate_random_features(n: int = 100, k: int = 20, s: int = 20,
                             p_values: Optional[Sequence[int]] = None, trials: int = 20,
                             sigma2: float = 0.1, r2: float = 1.0,
                             pool_size: Optional[int] = None, n_test: int = 2000,
                             teacher: Union[str, Callable[[np.ndarray], np.ndarray]] = "linear",
                             seed: int = 0, per_trial: bool = False) -> pd.DataFrame:
    """Test risk of a ReLU random-features model, dense, pruned, refitted and ``small``.

    ``k``: input dimension. ``pool_size``: rows of the feature pool ``W`` (default: the
    largest ``p``, itself defaulting to ``5 n``). ``teacher``: ``"linear"`` (a random
    ``theta`` with ``|theta|^2 = r2`` per trial) or a function mapping inputs
    (..., k) to targets (...). Same columns as :func:`simulate_linear`, methods
    :data:`RF_METHODS`; the risk is estimated on ``n_test`` fresh inputs per trial, shared
    by every ``p`` of that trial. ``per_trial``: the risks of every trial, as
    :func:`simulate_linear` gives them.
    """
    if p_values is None:
        p_values = default_p_values(n, pool_size or 5 * n)
    p_values = np.asarray(p_values, int)
    pool_size = pool_size or int(p_values.max())
    if p_values.min() < 1 or p_values.max() > pool_size or not 1 <= s <= pool_size:
        raise ValueError(f"p_values and s: need 1 <= p, s <= pool_size = {pool_size}")
    if teacher == "linear":
        target = None
    elif callable(teacher):
        target = teacher
    else:
        raise ValueError("teacher: allowed: 'linear' or a function of the inputs")
    risks = {(int(p), m): [] for p in p_values for m in RF_METHODS}
    chunk = max(1, int(2e8 // (8 * (n + n_test) * pool_size)))  # bound memory to ~200 MB
    for start in range(0, trials, chunk):
        count = min(chunk, trials - start)
        rng = np.random.default_rng((seed, 0, start))
        z, z_test = rng.standard_normal((count, n, k)), rng.standard_normal((count, n_test, k))
        if target is None:
            theta = rng.standard_normal((count, k))
            theta *= np.sqrt(r2) / np.linalg.norm(theta, axis=-1, keepdims=True)
            f, f_test = np.einsum("tnk,tk->tn", z, theta), np.einsum("tnk,tk->tn", z_test, theta)
        else:
            f, f_test = target(z), target(z_test)
        y = f + np.sqrt(sigma2) * rng.standard_normal(f.shape)
        W = rng.standard_normal((count, pool_size, k))
        phi = np.maximum(z @ W.transpose(0, 2, 1) / np.sqrt(k), 0.0)
        phi_test = np.maximum(z_test @ W.transpose(0, 2, 1) / np.sqrt(k), 0.0)

        def test_risk(coef):
            p = coef.shape[-1]
            residual = f_test - np.einsum("tmp,tp->tm", phi_test[..., :p], coef)
            return np.mean(residual ** 2, axis=-1) + sigma2

        small = test_risk(minnorm_least_squares(phi[..., :s], y))
        for p in p_values:
            rng_prune = np.random.default_rng((seed, 1, int(p), start))
            for name, coef in train_then_prune(phi[..., :p], y, s, rng_prune).items():
                risks[(int(p), name)].append(test_risk(coef))
            risks[(int(p), "small")].append(small)
    by_p = {int(p): {m: np.concatenate(risks[(int(p), m)]) for m in RF_METHODS}
            for p in p_values}
    return _risk_frame(by_p, n, RF_METHODS, per_trial)


# ------------------------------------------------------------------------- analytic
def minnorm_risk_isotropic(gamma, r2: float, sigma2: float, n: Optional[int] = None,
                           include_noise: bool = True) -> np.ndarray:
    """Min-norm least-squares risk for ``Sigma = I``, eq. (2), at ``gamma = p/n``.

    Without ``n``: the Hastie-Montanari-Rosset-Tibshirani limit. With ``n``: the exact
    expectation for Gaussian features with ``p = gamma n`` (infinite for
    ``|p - n| <= 1``). ``include_noise`` adds the irreducible ``sigma2``, making the value
    comparable with :func:`population_risk` and the simulations (which include it).
    """
    gamma = np.asarray(gamma, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if n is None:
            under = sigma2 * gamma / (1 - gamma)
            over = r2 * (1 - 1 / gamma) + sigma2 / (gamma - 1)
            excess = np.where(gamma < 1, under, np.where(gamma > 1, over, np.inf))
        else:
            p = gamma * n
            under = sigma2 * p / (n - p - 1)
            over = r2 * (1 - n / p) + sigma2 * n / (p - n - 1)
            excess = np.where(p < n - 1, under, np.where(p > n + 1, over, np.inf))
    return excess + sigma2 if include_noise else excess


def minnorm_coordinates_isotropic(beta: np.ndarray, n: int, sigma2: float,
                                  finite_size: bool = True):
    """Mean and spread of each min-norm coordinate, eq. (4): ``w_j ~ mean_j + tau_j g_j``.

    ``beta``: the coefficients of the ``p`` seen features; ``sigma2``: the noise the fit
    sees (``sigma_p^2``, unseen signal included). ``finite_size`` uses the exact finite
    ``(n, p)`` moments, else their ``n, p -> inf`` limit. Returns ``(mean, tau)``.
    """
    beta = np.asarray(beta, float)
    p, r2 = len(beta), float(np.sum(beta ** 2))
    if abs(p - n) <= 1:
        raise ValueError("the min-norm coordinates have infinite variance for |p - n| <= 1")
    if p < n:
        tau2 = sigma2 / (n - p - 1) if finite_size else sigma2 / (n - p)
        return beta.copy(), np.full(p, np.sqrt(tau2))
    if finite_size:
        tau2 = (beta ** 2 * (n * (n + 2) / (p * (p + 2)) - (n / p) ** 2)
                + (r2 - beta ** 2) * n * (p - n) / (p * (p - 1) * (p + 2))
                + sigma2 * n / (p * (p - n - 1)))
    else:
        gamma = p / n
        tau2 = np.full(p, (r2 * (1 - 1 / gamma) / gamma + sigma2 / (gamma - 1)) / p)
    return beta * n / p, np.sqrt(tau2)


def magnitude_pruned_risk_isotropic(beta: np.ndarray, n: int, s: int, sigma2: float,
                                    p: Optional[int] = None, finite_size: bool = True) -> float:
    """Predicted risk of min-norm least squares on the first ``p`` features pruned to its
    ``s`` largest coefficients, without refit (eq. (5), ``Sigma = I``).

    ``beta``: all ``d`` true coefficients; ``sigma2``: the label noise; ``p``: features
    seen (default all). Includes ``sigma2`` like the simulations.
    """
    beta = np.asarray(beta, float)
    p = len(beta) if p is None else p
    seen, unseen = beta[:p], float(np.sum(beta[p:] ** 2))
    noise = sigma2 + unseen
    if s >= p:
        return float(minnorm_risk_isotropic(p / n, np.sum(seen ** 2), noise,
                                            n if finite_size else None))
    mean, tau = minnorm_coordinates_isotropic(seen, n, noise, finite_size)
    if not np.all(tau > 0):  # noiseless and p < n: w = beta, the s largest are kept
        return float(noise + np.sum(np.sort(seen ** 2)[:p - s]))

    def kept_count(t):
        return np.sum(special.ndtr((mean - t) / tau) + special.ndtr((-t - mean) / tau)) - s

    top = np.max(np.abs(mean) + 40 * tau)
    t = optimize.brentq(kept_count, 0.0, top, xtol=1e-14 * top, rtol=1e-12)
    upper, lower = (t - mean) / tau, (-t - mean) / tau
    pdf_u, pdf_l = (np.exp(-a ** 2 / 2) / np.sqrt(2 * np.pi) for a in (upper, lower))
    tail_u, cdf_l = special.ndtr(-upper), special.ndtr(lower)
    c = mean - seen
    kept_error = (c ** 2 * (tail_u + cdf_l) + 2 * c * tau * (pdf_u - pdf_l)
                  + tau ** 2 * (upper * pdf_u + tail_u + cdf_l - lower * pdf_l))
    pruned_error = (1 - tail_u - cdf_l) * seen ** 2
    return float(noise + np.sum(kept_error + pruned_error))


def predict_linear_isotropic(n: int, s: int, p_values: Sequence[int], beta: np.ndarray,
                             sigma2: float, finite_size: bool = True) -> pd.DataFrame:
    """Analytic counterpart of :func:`simulate_linear` for ``Sigma = I`` (eqs. (2)-(6)).

    Columns ``p, p_over_n, method, risk`` (predicted mean risk, ``sigma2`` included) for
    ``dense``, ``magnitude`` (the Gaussian-coordinate approximation), ``random``,
    ``random+refit`` and ``oracle`` (exact expectations when ``finite_size``). ``beta``:
    all ``d`` coefficients, strongest first. Risks are infinite where ``|p - n| <= 1``.
    """
    beta = np.asarray(beta, float)
    energy = np.cumsum(np.concatenate([[0.0], beta ** 2]))  # energy[m] = |beta_{<=m}|^2
    total, size = energy[-1], (n if finite_size else None)

    def least_squares(m, signal):
        """Expected risk of least squares on m features carrying ``signal`` energy."""
        noise = sigma2 + total - signal
        return float(minnorm_risk_isotropic(m / n, signal, noise, size, include_noise=False)
                     + noise)

    oracle = least_squares(s, energy[s])
    rows = []
    for p in p_values:
        p = int(p)
        dense = least_squares(p, energy[p])
        kept = min(s, p)
        noise_p = sigma2 + total - energy[p]
        risks = {
            "dense": dense,
            "magnitude": (magnitude_pruned_risk_isotropic(beta, n, s, sigma2, p, finite_size)
                          if abs(p - n) > 1 else np.inf),
            "random": noise_p + kept / p * (dense - noise_p) + (1 - kept / p) * energy[p],
            "random+refit": least_squares(kept, kept / p * energy[p]),
            "oracle": oracle,
        }
        rows += [{"p": p, "p_over_n": p / n, "method": m, "risk": r} for m, r in risks.items()]
    return pd.DataFrame(rows)


def isotropic_comparison(n: int, d: int, s: int, sigma2: float = 0.1, seed: int = 0,
                         count: int = 16, exclude: float = 0.25,
                         methods: Sequence[str] = ("dense", "magnitude", "random", "oracle"),
                         predicted: Sequence[str] = ("dense", "magnitude"), **simulation) \
        -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulation and analytic curves of the isotropic linear model on one grid.

    The grid is :func:`default_p_values` (``count`` sizes) without the sizes within
    ``exclude`` of ``p/n = 1``, where the risk's variance explodes. Returns the
    :func:`simulate_linear` frame (``methods`` only; ``simulation``, e.g. ``trials``, goes
    to it) and the :func:`predict_linear_isotropic` frame (``predicted`` only), the
    prediction using the simulated problem's ``beta``.
    """
    problem = linear_problem(d, sigma2=sigma2, spectrum="isotropic")
    p_values = [p for p in default_p_values(n, d, count) if abs(p / n - 1) >= exclude]
    simulated = simulate_linear(n=n, d=d, s=s, sigma2=sigma2, spectrum="isotropic",
                                p_values=p_values, problem=problem, seed=seed, **simulation)
    analytic = predict_linear_isotropic(n, s, p_values, problem.beta, sigma2)
    return (simulated[simulated.method.isin(methods)],
            analytic[analytic.method.isin(predicted)])


def analytic_agreement(simulated: pd.DataFrame, analytic: pd.DataFrame) -> dict[str, float]:
    """How far the analytic curves are from simulation, per predicted method.

    For each method of ``analytic`` (columns ``p, method, risk``) matched with
    ``simulated`` (``p, method, risk_mean, risk_std, trials``): ``<method>_max_z``, the
    largest distance in standard errors of the simulated mean, and ``<method>_max_rel``,
    the largest relative difference ``|simulated - analytic| / analytic``.
    """
    merged = simulated.merge(analytic, on=["p", "method"])
    z = (merged.risk_mean - merged.risk) / (merged.risk_std / np.sqrt(merged.trials))
    relative = (merged.risk_mean - merged.risk).abs() / merged.risk
    result = {}
    for method in analytic["method"].unique():
        chosen = merged.method == method
        result[f"{method}_max_z"] = float(z[chosen].abs().max())
        result[f"{method}_max_rel"] = float(relative[chosen].max())
    return result


# ------------------------------------------------------------------------- reading
def beats_oracle(frame: pd.DataFrame, s: int,
                 methods: Sequence[str] = ("magnitude+refit", "magnitude"),
                 baseline: Optional[str] = None) -> dict[str, np.ndarray]:
    """The ``p/n`` where each train-then-prune method has a lower mean risk than the
    baseline small model (``oracle``, or ``small`` for random features, by default).

    ``frame``: output of :func:`simulate_linear` or :func:`simulate_random_features`;
    ``s``: its sparsity. Only ``p > s`` counts: a model of at most ``s`` features is not
    pruned, it is another small model.
    """
    if baseline is None:
        baseline = "oracle" if "oracle" in set(frame["method"]) else "small"
    table = frame[frame["p"] > s].pivot(index="p_over_n", columns="method", values="risk_mean")
    return {m: table.index[table[m] < table[baseline]].to_numpy() for m in methods}


def wins_past_threshold(frame: pd.DataFrame, s: int, method: str,
                        baseline: Optional[str] = None) -> Optional[bool]:
    """Chang et al.'s first claim on one simulation: past the interpolation threshold
    (``p > n``), training large then pruning (``method``) *can* beat the small model.

    True if ``method``'s mean risk is below the baseline's (:func:`beats_oracle`) at some
    ``p/n > 1``, False if at none, None if the frame has no ``p/n > 1`` to judge.
    """
    if not (frame["p_over_n"] > 1).any():
        return None
    wins = beats_oracle(frame, s, methods=[method], baseline=baseline)[method]
    return bool((wins > 1).any())


def double_descent_judgement(trials: pd.DataFrame, s: int, method: str,
                             window: float = THRESHOLD_WINDOW) -> dict:
    """Chang et al.'s second claim judged over trials: the sparse model's risk, as ``p``
    grows at fixed ``s``, peaks near the interpolation threshold ``p = n`` and descends
    again beyond it.

    ``trials``: a per-trial frame (``per_trial=True`` of :func:`simulate_linear` or
    :func:`simulate_random_features`); ``method``: the sparse model (``"magnitude"``).
    Only ``p > s`` counts, where the model is pruned (at ``p <= s`` it is a small dense
    model). The trials are split by parity. The even ones place the landmarks: the peak
    is the ``p/n`` of their largest mean risk, *near the threshold* if within a factor
    ``window`` of 1, and the low point the ``p/n`` of their lowest mean risk beyond it.
    The odd ones judge the descent, each trial's ``log(risk at the peak / risk at the
    low point)`` (paired: one trial's data at both), on a t interval above 0
    (:func:`sddlib.analysis.metrics.judge`). The log ratio, not the difference: near ``p = n`` the
    risk is heavy-tailed (its expectation is infinite or nearly so, eq. (2)), and one
    huge trial would make a difference's interval useless while its ratio stays
    readable.

    Returns ``peak_p_over_n``, ``peak_risk``, ``low_p_over_n``, ``low_risk`` (the mean
    risks over every trial at the landmarks), ``descent`` (``1 - low_risk / peak_risk``),
    ``near_threshold``, ``judgement`` (the descent's :class:`~sddlib.analysis.metrics.Judgement`),
    ``holds`` (False when the peak is not near the threshold, else the judgement's; None
    when nothing lies past the window or fewer than two odd trials) and ``verdict`` (in
    words).
    """
    from sddlib.analysis.metrics import judge, verdict

    curve = trials[(trials["method"] == method) & (trials["p"] > s)]
    if curve.empty:
        raise ValueError(f"method {method!r} has no p > s = {s} in the frame")
    wide = curve.pivot_table(index="trial", columns="p_over_n", values="risk").sort_index(
        axis=1)
    means = wide[wide.index % 2 == 0].mean()
    peak = float(means.idxmax())
    after = means[means.index > peak]
    low = float(after.idxmin()) if not after.empty else peak
    odd = wide[wide.index % 2 == 1]
    judgement = judge(np.log(odd[peak] / odd[low]).to_numpy() if low != peak else [],
                      0.0, above=True, unit="{:.2f}",
                      statistic=f"log of the risk at p/n {peak:.2f} over the risk at "
                                f"p/n {low:.2f}")
    near = bool(1.0 / window <= peak <= window)
    result = {"peak_p_over_n": peak, "peak_risk": float(wide[peak].mean()),
              "low_p_over_n": low, "low_risk": float(wide[low].mean()),
              "descent": float(1 - wide[low].mean() / wide[peak].mean()),
              "near_threshold": near, "judgement": judgement}
    if float(wide.columns.max()) <= window:
        result["holds"] = None
        result["verdict"] = verdict(None, f"nothing lies past p/n = {window:g}")
    elif not near:
        result["holds"] = False
        result["verdict"] = verdict(False, f"the risk peaks at p/n = {peak:.2f}, not near "
                                           f"the threshold")
    else:
        result["holds"] = judgement.holds if judgement.judged else None
        result["verdict"] = judgement.words()
    return result


def refit_judgements(per_trial: pd.DataFrame) -> dict[str, dict]:
    """Chang et al.'s third claim judged over trials: per ``structure`` and ``p/n`` of a
    :func:`refit_benefit` frame, a :class:`sddlib.analysis.metrics.Judgement` of each trial's
    benefit at the highest correlation minus its benefit at the lowest (every correlation
    reuses the trial's draws, so the difference is paired), above 0 when refitting helps
    more with correlated features. ``structure -> {"p/n 2": judgement, ...}``."""
    from sddlib.analysis.metrics import judge

    judged: dict[str, dict] = {}
    for (structure, p_over_n), group in per_trial.groupby(["structure", "p_over_n"],
                                                          sort=False):
        table = group.pivot(index="correlation", columns="trial", values="benefit").sort_index()
        low, high = table.index[0], table.index[-1]
        judged.setdefault(structure, {})[f"p/n {p_over_n:g}"] = judge(
            (table.loc[high] - table.loc[low]).to_numpy(), 0.0, above=True, unit="{:.3f}",
            statistic=f"refit benefit at rho {high:g} minus at rho {low:g}")
    return judged


def describe_wins(frame: pd.DataFrame, s: int, method: str,
                  baseline: Optional[str] = None) -> str:
    """Where ``method`` beats the small model (:func:`beats_oracle`), in words over the
    frame's grid of pruned sizes ``p > s`` (:func:`describe_intervals`)."""
    wins = beats_oracle(frame, s, methods=[method], baseline=baseline)[method]
    grid = np.sort(frame[frame["p"] > s]["p_over_n"].unique())
    return describe_intervals(wins, grid)


def dense_peak_p_over_n(frame: pd.DataFrame) -> float:
    """The ``p/n`` where the dense model's mean risk is highest (its interpolation peak)."""
    dense = frame[frame["method"] == "dense"]
    return float(dense.loc[dense["risk_mean"].idxmax(), "p_over_n"])


def mean_refit_benefit(per_trial: pd.DataFrame) -> pd.DataFrame:
    """A :func:`refit_benefit` frame averaged over trials: per ``structure``, ``p_over_n``
    and ``correlation`` the mean ``benefit``, its standard error ``benefit_se`` and the
    mean ``risk_pruned`` and ``risk_refit``."""
    return per_trial.groupby(["structure", "p_over_n", "correlation"], sort=False).agg(
        benefit=("benefit", "mean"), benefit_se=("benefit", "sem"),
        risk_pruned=("risk_pruned", "mean"), risk_refit=("risk_refit", "mean")).reset_index()


def describe_intervals(values: np.ndarray, grid: np.ndarray) -> str:
    """Where on ``grid`` the ``values`` lie, as runs of consecutive grid points in words
    (e.g. "[2.23, 5.00]" or "[0.22, 0.87] and [1.12, 5.00]"); "none of the grid" if empty.
    """
    chosen = np.isin(np.round(grid, 12), np.round(np.asarray(values), 12))
    runs, start = [], None
    for index, inside in enumerate(chosen):
        if inside and start is None:
            start = index
        if start is not None and (not inside or index == len(chosen) - 1):
            end = index if inside else index - 1
            runs.append(f"[{grid[start]:.2f}, {grid[end]:.2f}]")
            start = None
    if not runs:
        return "none of the grid"
    return runs[0] if len(runs) == 1 else ", ".join(runs[:-1]) + " and " + runs[-1]


def _risk_frame(risks: dict[int, dict[str, np.ndarray]], n: int, methods: Sequence[str],
                per_trial: bool) -> pd.DataFrame:
    """A simulation's frame: one row per trial (``per_trial``, :func:`_trial_frame`) or its
    summary per p and method (:func:`_summary_rows`)."""
    if per_trial:
        return _trial_frame(risks, n, methods)
    rows = []
    for p, per_method in risks.items():
        rows += _summary_rows(p, n, per_method, methods)
    return pd.DataFrame(rows)


def _trial_frame(risks: dict[int, dict[str, np.ndarray]], n: int,
                 methods: Sequence[str]) -> pd.DataFrame:
    """Per-trial risks (``p -> method -> (trials,)``) as a tidy frame."""
    rows = [{"p": p, "p_over_n": p / n, "method": m, "trial": trial, "risk": float(risk)}
            for p, per_method in risks.items() for m in methods
            for trial, risk in enumerate(per_method[m])]
    return pd.DataFrame(rows)


def summarise(trials: pd.DataFrame) -> pd.DataFrame:
    """A per-trial frame (``per_trial=True``) as the simulations' summary frame: per ``p``
    and method, in their order, the mean risk, its standard deviation (ddof 1) and the
    number of trials; the same numbers as the simulation without ``per_trial``."""
    rows = []
    for (p, method), group in trials.groupby(["p", "method"], sort=False):
        n = int(round(p / group["p_over_n"].iloc[0]))
        rows += _summary_rows(int(p), n, {method: group["risk"].to_numpy()}, [method])
    return pd.DataFrame(rows)


def win_judgement(trials: pd.DataFrame, s: int, method: str,
                  baseline: Optional[str] = None) -> tuple:
    """Chang et al.'s first claim judged over trials: past the interpolation threshold
    (``p/n > 1``, and ``p > s``, where the model is pruned), training large then pruning
    with ``method`` beats the small model (``oracle``, or ``small`` for random features).

    Returns a :class:`sddlib.analysis.metrics.Judgement` of the paired advantage ``baseline risk -
    method risk`` (the same trial's data for both) and the ``p/n`` it was judged at (None
    when there is none). The trials are split by parity: the even
    ones choose the ``p/n`` where the mean advantage is largest, the odd ones are judged
    there, one advantage each (a t interval above 0). Choosing and judging on the same
    trials would let the noise of a whole grid of ``p/n`` make a win by itself. With
    fewer than two odd trials, or no ``p/n > 1``, it cannot be judged.
    """
    from sddlib.analysis.metrics import judge

    if baseline is None:
        baseline = "oracle" if "oracle" in set(trials["method"]) else "small"
    past = trials[(trials["p"] > s) & (trials["p_over_n"] > 1)]
    if past.empty:
        return judge([], statistic=f"{baseline} minus {method} risk", unit="{:.3f}"), None
    wide = past.pivot_table(index=["trial", "p_over_n"], columns="method", values="risk")
    advantage = (wide[baseline] - wide[method]).rename("advantage").reset_index()
    choosing = advantage[advantage["trial"] % 2 == 0]
    where = float(choosing.groupby("p_over_n")["advantage"].mean().idxmax())
    judged = advantage[(advantage["trial"] % 2 == 1) & (advantage["p_over_n"] == where)]
    return judge(judged["advantage"], 0.0, above=True, unit="{:.3f}",
                 statistic=f"{baseline} minus {method} risk at p/n = {where:.2f}, the p/n "
                           f"the other trials pick"), where


def _summary_rows(p: int, n: int, risks: dict, methods: Sequence[str]) -> list[dict]:
    return [{"p": p, "p_over_n": p / n, "method": m, "risk_mean": float(np.mean(risks[m])),
             "risk_std": float(np.std(risks[m], ddof=1)) if len(risks[m]) > 1 else np.nan,
             "trials": len(risks[m])} for m in methods]
