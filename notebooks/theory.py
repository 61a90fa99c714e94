# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Theory: train large then prune, or train small?
#
# **The question** (Chang et al. {cite}`chang2021provable`): to end with a model of `s`
# weights, should we fit a small model on the `s` best features, or fit a large model on
# `p > s` features and prune it to `s`? **Their answer**, for least squares and random
# features: past the interpolation threshold `p = n`, training large then pruning can win,
# even against an oracle that knows which features are best; and the pruned model's risk,
# as `p` grows at fixed `s`, shows a double descent of its own.
#
# **The setup** (`sddlib.analysis.theory`, whose docstring has every equation): Gaussian features
# with a covariance spectrum, a ground-truth coefficient vector, label noise; the model
# sees the first `p` features of `n` samples and is fitted by min-norm least squares; it is
# pruned to `s` coefficients by magnitude or at random, with or without a least-squares
# refit on the kept support. The *oracle* fits the `s` truly best features. Test risks are
# exact population risks, averaged over independent trials.

# %% tags=["parameters", "remove-cell"]
profile = "quick"
linear = {"n": 100, "d": 500, "s": 50, "trials": 50, "sigma2": 0.1}
isotropic = {"n": 100, "d": 400, "s": 20, "trials": 200, "sigma2": 0.2}
random_features = {"n": 100, "k": 20, "s": 20, "trials": 20}
correlated = {"structures": ["equicorrelated", "ar1"], "correlations": [0.0, 0.3, 0.6, 0.9],
              "p_over_n": [2, 5]}
network = {"experiment": {"train_size": 4000, "test_size": 1000},
           "widths": [8, 16, 32, 64, 128], "target_weights": 2304, "seeds": [0, 1, 2]}
seed = 0
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures

figures.use_profile("theory", globals())

# %% tags=["hide-input"]
import pandas as pd

from sddlib.analysis import metrics, theory
from sddlib.analysis.network_check import advantage_judgement, network_check
from sddlib.book import figures, pages, plots

# the network check's runs first (its figure is at the end of the page): the only runs
# this page trains, so `sddlib figures --compute-only` finds them before any simulation
network_frame = network_check(**pages.network_arguments(network),
                              compute_missing=compute_missing)
# the simulations are kept in the run store and reused (figures.computed)
# per trial, so the claims below can pair the methods trial by trial
linear_trials = figures.computed(theory.simulate_linear, **linear, seed=seed, per_trial=True)
rf_trials = figures.computed(theory.simulate_random_features, **random_features, seed=seed,
                             per_trial=True)
linear_frame, rf_frame = theory.summarise(linear_trials), theory.summarise(rf_trials)
# near p = n the risk's variance explodes; the comparison leaves |p/n - 1| < 0.25 out
iso_frame, analytic = figures.computed(theory.isotropic_comparison, **isotropic, seed=seed)

# agreement of the analytic curves with simulation, in standard errors and relative terms
agreement = theory.analytic_agreement(iso_frame, analytic)
figures.glue("dense_max_z", agreement["dense_max_z"])
figures.glue("dense_max_rel", agreement["dense_max_rel"])
figures.glue("pruned_max_rel", agreement["magnitude_max_rel"])
figures.glue("pruned_max_z", agreement["magnitude_max_z"])

figures.glue("wins_magnitude", theory.describe_wins(linear_frame, linear["s"], "magnitude"))
figures.glue("wins_refit", theory.describe_wins(linear_frame, linear["s"], "magnitude+refit"))
figures.glue("rf_wins_refit", theory.describe_wins(rf_frame, random_features["s"],
                                                   "magnitude+refit"))
win_linear, win_linear_where = theory.win_judgement(linear_trials, linear["s"], "magnitude")
win_rf, _ = theory.win_judgement(rf_trials, random_features["s"], "magnitude+refit")
figures.claim("claim_wins_linear", "Linear model: past the threshold, training large then "
              "pruning (magnitude) beats the oracle-support small model", win_linear.words(),
              {"oracle − magnitude risk": win_linear})
figures.claim("claim_wins_rf", "Random features: past the threshold, training large then "
              "pruning (with refit) beats the small model", win_rf.words(),
              {"small − pruned risk": win_rf})
figures.glue("win_linear_interval", win_linear.interval())
figures.glue("win_linear_where", "none" if win_linear_where is None
             else f"{win_linear_where:.2f}")
figures.glue("win_rf_interval", win_rf.interval())
figures.glue("win_trials", f"{win_linear.seeds} and {win_rf.seeds}")
figures.glue("dense_peak_p_over_n", theory.dense_peak_p_over_n(linear_frame))
figures.glue("linear_s_over_n", linear["s"] / linear["n"])
figures.glue("rf_s_over_n", random_features["s"] / random_features["n"])

figures.glue("fig_theory", plots.risk_figure(
    {"frame": linear_frame, "title": "linear, power-law spectrum",
     "mark": linear["s"] / linear["n"]},
    {"frame": iso_frame, "title": "linear, isotropic: simulation vs analytic",
     "analytic": analytic},
    {"frame": rf_frame, "title": "random ReLU features"}))

# %% [markdown]
# ```{glue:figure} fig_theory
# :name: fig-theory
#
# Test risk against p/n at fixed s. Top left: linear model with a power-law spectrum; the
# dotted green line is the oracle small model on the s best features. Top right: isotropic
# features, simulation (lines, bands of ±2 standard errors) and the analytic curves
# (circles): the dense min-norm risk of Hastie et al. {cite}`hastie2019surprises` and the
# Gaussian-coordinate prediction of the magnitude-pruned risk. Bottom: random ReLU
# features, where the baseline is a small model on s random features.
# ```
#
# **Measured.** The dense min-norm risk peaks at the interpolation threshold
# (p/n = {glue:text}`dense_peak_p_over_n:.2f`) and falls again beyond it. With
# s/n = {glue:text}`linear_s_over_n:.2f`, magnitude pruning *without* refit beats the
# oracle small model for p/n in {glue:text}`wins_magnitude`; magnitude pruning with a
# least-squares refit beats it for p/n in {glue:text}`wins_refit`. With random features
# (s/n = {glue:text}`rf_s_over_n:.2f`), pruning with refit beats the small model for p/n
# in {glue:text}`rf_wins_refit`.
#
# **The claim that past the threshold training large then pruning can beat the small
# model.** Judged on trials, paired: half of the trials (the even ones) pick the p/n > 1
# where pruning's mean advantage over the small model is largest, and the other half are
# judged there, each trial's small-model risk minus its pruned risk, on a 95% t interval
# ({glue:text}`win_trials` trials; picking and judging on the same trials would let the
# noise of a whole grid of p/n make a win by itself). In the linear model, magnitude
# pruning without refit against the oracle (advantage {glue:text}`win_linear_interval` at
# p/n = {glue:text}`win_linear_where`): the claim {glue:text}`claim_wins_linear`; with
# random features, magnitude pruning with refit against the small model (advantage
# {glue:text}`win_rf_interval`): it {glue:text}`claim_wins_rf`.
#
# **Analytic vs simulated.** The dense analytic risk agrees with simulation to within
# {glue:text}`dense_max_z:.1f` standard errors (largest relative difference
# {glue:text}`dense_max_rel:.1%`); the predicted magnitude-pruned risk to within
# {glue:text}`pruned_max_rel:.1%` ({glue:text}`pruned_max_z:.1f` standard errors). The test
# suite holds both to these standards (`tests/test_theory.py`).

# %% [markdown]
# ## The sparse model's own double descent
#
# **The claim.** Growing the original model while keeping the target sparsity `s` gives a
# new double descent: the pruned model's test risk, as a function of p/n at fixed s/n,
# rises to a peak at the interpolation threshold p = n and descends again beyond it.
#
# **How it is judged** (`theory.double_descent_judgement`, on the trials of the figure
# above, pruned models only, p > s). Half of the trials (the even ones) place the
# landmarks: the peak is the p/n of their largest mean risk, near the threshold when
# within a factor {glue:text}`dd_window` of p/n = 1, and the low point the p/n of their
# lowest mean risk beyond it. The other half judge the descent, paired: each trial's log
# of its risk at the peak over its risk at the low point, on a 95% t interval above 0. A
# log ratio rather than a difference, because near p = n the risk is heavy-tailed (one
# trial can be a hundred times the others) while its ratio stays readable. The table's
# risks are the means over every trial at those landmarks.

# %% tags=["hide-input"]
double_descent = pd.DataFrame([
    {"model": model, "method": method, **theory.double_descent_judgement(trials, s, method)}
    for model, trials, s in (("linear", linear_trials, linear["s"]),
                             ("random features", rf_trials, random_features["s"]))
    for method in ("magnitude", "magnitude+refit")])
double_descent["log ratio [95%]"] = double_descent.judgement.map(
    lambda judgement: judgement.interval())
figures.glue("dd_window", theory.THRESHOLD_WINDOW)
for row in double_descent.itertuples():
    key = f"dd_{'rf' if row.model == 'random features' else 'linear'}_" + \
        ("refit" if row.method.endswith("refit") else "magnitude")
    figures.glue(f"{key}_peak", row.peak_p_over_n)
    figures.glue(f"{key}_peak_risk", row.peak_risk)
    figures.glue(f"{key}_low", row.low_p_over_n)
    figures.glue(f"{key}_low_risk", row.low_risk)
    figures.claim(f"{key}_verdict", f"{row.model.capitalize()}, {row.method}: the pruned "
                  f"model's risk has its own double descent in p/n", row.verdict,
                  {"log peak / low risk": row.judgement} if row.near_threshold else None)
shown = double_descent[["model", "method", "peak_p_over_n", "peak_risk", "low_p_over_n",
                        "low_risk", "descent", "log ratio [95%]", "verdict"]]
figures.glue("dd_table", shown.style.format(
    {"peak_p_over_n": "{:.2f}", "peak_risk": "{:.3g}", "low_p_over_n": "{:.2f}",
     "low_risk": "{:.3g}", "descent": "{:.1%}"}).hide(axis="index"))

# %% [markdown]
# ```{glue:} dd_table
# ```
#
# **Measured.** In the linear model the magnitude-pruned model's risk peaks at
# p/n = {glue:text}`dd_linear_magnitude_peak:.2f` (risk
# {glue:text}`dd_linear_magnitude_peak_risk:.3g`) and falls to
# {glue:text}`dd_linear_magnitude_low_risk:.3g` at p/n =
# {glue:text}`dd_linear_magnitude_low:.2f`: the claim {glue:text}`dd_linear_magnitude_verdict`.
# Refitted on its support, the pruned model peaks at p/n =
# {glue:text}`dd_linear_refit_peak:.2f` (risk {glue:text}`dd_linear_refit_peak_risk:.3g`,
# lowest beyond it {glue:text}`dd_linear_refit_low_risk:.3g`): the claim
# {glue:text}`dd_linear_refit_verdict`. With random features the magnitude-pruned model
# peaks at p/n = {glue:text}`dd_rf_magnitude_peak:.2f` (the claim
# {glue:text}`dd_rf_magnitude_verdict`), the refitted one at p/n =
# {glue:text}`dd_rf_refit_peak:.2f` (risk {glue:text}`dd_rf_refit_peak_risk:.3g`, lowest
# beyond it {glue:text}`dd_rf_refit_low_risk:.3g`; the claim {glue:text}`dd_rf_refit_verdict`).

# %% [markdown]
# ## Retraining and correlated features
#
# **The claim.** Retraining after pruning helps, and the more so the more correlated the
# features are. In the figure above, with independent features, the least-squares refit
# on the kept support is the oracle's estimator on a worse support, and past the threshold
# it can lose to the pruned min-norm model it replaces.
#
# **How it is tested** (`theory.refit_benefit`): the linear task of the first figure
# (power-law spectrum and signal, same n, d, s), with its features correlated with
# parameter rho, the signal energy held fixed so that risks compare across rho. Two
# structures: *equicorrelated* (every pair of features has correlation rho, one factor
# shared by all) and *AR(1)* (correlation rho^|i-j| between the i-th and j-th strongest
# features, local). The benefit of refit is the risk of the magnitude-pruned model without
# refit minus its risk with refit, a difference of full prediction risks (positive: refit
# helps). Every rho reuses the same random draws, so differences between correlations are
# paired trial by trial. At each p/n the claim is judged on each trial's benefit at the
# highest rho minus its benefit at the lowest (`theory.refit_judgements`), on a 95% t
# interval over the trials: it holds when the interval lies above 0, does not hold when
# below, and is inconclusive when it straddles 0. It holds for a structure when it holds
# at every p/n shown.

# %% tags=["hide-input"]
per_trial = pd.concat([
    figures.computed(theory.refit_benefit, correlations=correlated["correlations"],
                     p_values=[int(round(r * linear["n"])) for r in correlated["p_over_n"]],
                     n=linear["n"], d=linear["d"], s=linear["s"], trials=linear["trials"],
                     sigma2=linear["sigma2"], structure=structure, seed=seed)
    for structure in correlated["structures"]], ignore_index=True)
benefit = theory.mean_refit_benefit(per_trial)
widest = max(correlated["p_over_n"])
low_rho, high_rho = min(correlated["correlations"]), max(correlated["correlations"])
figures.glue("corr_low", low_rho)
figures.glue("corr_high", high_rho)
figures.glue("corr_widest", widest)
for structure, cases in theory.refit_judgements(per_trial).items():
    figures.claim(f"refit_verdict_{structure}", f"Refitting after pruning helps more the "
                  f"more correlated the features ({structure})",
                  metrics.verdict_of_judgements(cases, unit="p/n"), cases)
    at_widest = benefit[(benefit.structure == structure) & (benefit.p_over_n == widest)]
    at_widest = at_widest.set_index("correlation").benefit
    figures.glue(f"refit_benefit_{structure}_low", float(at_widest[low_rho]))
    figures.glue(f"refit_benefit_{structure}_high", float(at_widest[high_rho]))

figures.glue("fig_refit_correlation",
             plots.refit_benefit_figure(benefit, correlated["structures"]))

# %% [markdown]
# ```{glue:figure} fig_refit_correlation
# :name: fig-refit-correlation
#
# The benefit of refitting the magnitude-pruned least-squares model on its kept support,
# against the correlation of the features (bars: ±2 standard errors over trials), for
# equicorrelated features (left) and AR(1) features (right), at several p/n past the
# interpolation threshold. Above the grey line refitting helps.
# ```
#
# **Measured.** At p/n = {glue:text}`corr_widest:g`, the benefit of refit goes from
# {glue:text}`refit_benefit_equicorrelated_low:.3f` at rho = {glue:text}`corr_low:g` to
# {glue:text}`refit_benefit_equicorrelated_high:.3f` at rho = {glue:text}`corr_high:g`
# with equicorrelated features, and from {glue:text}`refit_benefit_ar1_low:.3f` to
# {glue:text}`refit_benefit_ar1_high:.3f` with AR(1) features. The claim that refitting
# helps more the more correlated the features {glue:text}`refit_verdict_equicorrelated`
# for equicorrelated features and {glue:text}`refit_verdict_ar1` for AR(1) features.

# %% [markdown]
# ## The network check
#
# Chang et al. check the theory on ResNets of growing width pruned to a fixed number of
# weights. The `quick` profile does it on MNIST-1D with MLPs of two hidden layers of
# growing width (the `paper` profile: ResNet-18 of growing base width on CIFAR-10), each
# trained dense and then pruned in one step to the same number of weights, by magnitude or
# at random, with and without retraining. Networks that have no more weights than the
# target are trained directly: they are the "train small" baseline.

# %% tags=["hide-input"]
mean_error = network_frame.groupby(["method", "width"], as_index=False).test_error.mean()
small = mean_error[mean_error.method == "small (trained directly)"]
pruned = mean_error[mean_error.method == "magnitude, retrained"]
widest = pruned.loc[pruned.width.idxmax()] if not pruned.empty else None
# the weights the pruned networks kept, counted from their masks (the target if none ran)
kept = network_frame[network_frame.method.str.endswith("retrained")].weights \
    if not network_frame.empty else pd.Series(dtype=int)
figures.glue("net_target", int(kept.max()) if not kept.empty else network["target_weights"])
figures.glue("net_kept_uniform", "all" if kept.nunique() <= 1 else "not all")
figures.glue("net_small_best", float(small.test_error.min()) if not small.empty
             else float("nan"))
figures.glue("net_pruned_widest", float(widest.test_error) if widest is not None
             else float("nan"))
figures.glue("net_widest", int(widest.width) if widest is not None else 0)
net_judgement = advantage_judgement(network_frame)
figures.glue("net_verdict", "beats" if widest is not None and not small.empty and
             widest.test_error < small.test_error.min() else "does not beat")
figures.glue("net_interval", net_judgement.interval())
figures.glue("net_seeds", net_judgement.seeds)
figures.claim("net_claim", "Network check: a wide network pruned to a small one's size beats "
              "the small network trained directly", net_judgement.words(),
              {"small − pruned test error": net_judgement})

fig, axes = plots.figure(1, 1, width=7, height=4)
ax = axes[0, 0]
for method, group in mean_error.groupby("method"):
    ax.plot(group.width, group.test_error, "o-" if "not" not in method else "o--",
            label=method, ms=4)
ax.set(xscale="log", xlabel="width", ylabel="test error",
       title=f"pruned to {network['target_weights']} weights")
ax.set_xticks(network["widths"], [str(w) for w in network["widths"]])
ax.minorticks_off()
ax.legend(fontsize=8)
fig.tight_layout()
figures.glue("fig_network", fig)

# %% [markdown]
# ```{glue:figure} fig_network
# :name: fig-network
#
# Test error of the sparse MLP against the width it was trained at, every pruned network
# keeping the same number of hidden-layer weights; the dense networks' error for
# reference. Narrow networks with no more weights than the target are trained small
# directly.
# ```
#
# **Measured.** Pruned to {glue:text}`net_target` weights (counted from the masks;
# {glue:text}`net_kept_uniform` pruned networks keep the same count) and retrained, the
# widest network (width {glue:text}`net_widest`) reaches a test error of
# {glue:text}`net_pruned_widest:.1%`; the best small network trained directly reaches
# {glue:text}`net_small_best:.1%`: on the mean errors, training large and pruning
# {glue:text}`net_verdict` it. Judged seed by seed (each seed's best small network's error
# minus its widest pruned network's, {glue:text}`net_interval` over
# {glue:text}`net_seeds` seeds, a 95% t interval), the claim {glue:text}`net_claim`.

# %% [markdown]
# ## Rerun this figure
#
# ```bash
# sddlib figures --only theory -p linear.trials=200 -p linear.s=25
# jupyter-book build book/
# ```
