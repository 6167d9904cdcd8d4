"""tripwire.stats: every formula tripwire decides with, pure functions on sufficient statistics.

No I/O and no dependency on the rest of tripwire: numpy, scipy and statsmodels only.
The methods, defaults and conventions are explained in ``docs/statistics.md``.
Modules, one concern each:

* ``sufficient``: MeanStats, RatioStats, CupedMeanStats, CupedRatioStats (validated, addable)
* ``results``: Effect, ArmSummary, ComparisonResult, Status
* ``comparisons``: welch_t_test, two_proportion_z_test, delta_method_ratio_test
* ``relative``: relative effects by the delta method or Fieller
* ``cuped``: cuped_mean_test, cuped_ratio_test
* ``multiplicity``, ``multiarm``: Bonferroni, Holm, Benjamini–Hochberg, Dunnett; compare_to_control
* ``guardrails``: non_inferiority_test, evaluate_guardrails (intersection–union by default)
* ``validity``: sample_ratio_mismatch, normal_approximation_adequate
* ``heterogeneity``: cochran_q, partial_pooling, simpson_paradox, analyze_cohorts
* ``bootstrap``: bootstrap_difference, bootstrap_quantile_difference
* ``exact``: exact binomial, Poisson and two-sample tails (thin segments)
* ``count_noise``: binomial and one-count noise floors for monitored shares and ratios
* ``sequential``, ``msprt``, ``power``, ``did``, ``switchback``: group-sequential designs,
  always-valid tests, planning, difference-in-differences, switchback designs

>>> from tripwire.stats import MeanStats, welch_t_test
>>> r = welch_t_test(MeanStats(n=1000, sum=5000.0, sum_sq=29000.0),
...                  MeanStats(n=1000, sum=5200.0, sum_sq=31000.0))
>>> round(r.absolute.estimate, 2), round(r.relative.estimate, 3), r.status
(0.2, 0.04, <Status.OK: 'ok'>)
"""

from tripwire.stats.bootstrap import (
    BootstrapResult,
    bootstrap_difference,
    bootstrap_quantile_difference,
)
from tripwire.stats.comparisons import (
    MIN_EXPECTED_COUNT,
    delta_method_ratio_test,
    ratio_variance,
    two_proportion_z_test,
    welch_df,
    welch_t_test,
)
from tripwire.stats.count_noise import (
    binomial_information,
    binomial_sd,
    clamp_share,
    count_resolution_sd,
)
from tripwire.stats.cuped import (
    cuped_mean_test,
    cuped_ratio_test,
    variance_reduction_from_correlation,
)
from tripwire.stats.did import DiDResult, PreTrendResult, difference_in_differences, pre_trend_test
from tripwire.stats.exact import (
    binomial_tail,
    poisson_ratio_exact_tail,
    poisson_tail,
    two_proportion_exact_tail,
)
from tripwire.stats.guardrails import (
    GuardrailVerdict,
    NonInferiorityResult,
    evaluate_guardrails,
    non_inferiority_test,
)
from tripwire.stats.heterogeneity import (
    CohortAnalysis,
    HeterogeneityResult,
    PartialPoolingResult,
    SimpsonResult,
    analyze_cohorts,
    cochran_q,
    partial_pooling,
    simpson_paradox,
)
from tripwire.stats.msprt import (
    MSPRTResult,
    confidence_sequence_halfwidth,
    mixing_variance,
    mixture_likelihood_ratio,
    msprt,
)
from tripwire.stats.multiarm import ArmComparison, MultiArmResult, compare_to_control
from tripwire.stats.multiplicity import (
    adjust_p_values,
    benjamini_hochberg_adjust,
    bonferroni_adjust,
    dunnett_adjust,
    holm_adjust,
    rejection_levels,
)
from tripwire.stats.power import (
    MDEResult,
    RuntimeEstimate,
    SampleSizePlan,
    cohort_mde,
    mde_from_variance,
    mde_proportions,
    runtime_days,
    sample_size_means,
    sample_size_proportions,
    sample_size_ratio,
)
from tripwire.stats.relative import relative_effect
from tripwire.stats.results import ArmSummary, ComparisonResult, Effect, Status
from tripwire.stats.sequential import (
    CrossingProbabilities,
    Decision,
    FutilityPlan,
    LookResult,
    SequentialDesign,
    crossing_probabilities,
    drift_for_power,
    evaluate_look,
    inflation_factor,
    repeated_confidence_interval,
    sequential_boundaries,
    spending_function,
    update_design,
)
from tripwire.stats.sufficient import CupedMeanStats, CupedRatioStats, MeanStats, RatioStats
from tripwire.stats.switchback import (
    BlockLengthChoice,
    SwitchbackDesign,
    SwitchbackResult,
    autocovariance,
    choose_block_length,
    estimator_variance,
    plan_switchback,
    switchback_design,
    switchback_test,
)
from tripwire.stats.validity import (
    SRM_THRESHOLD,
    SampleRatioResult,
    SampleSizeCheck,
    normal_approximation_adequate,
    sample_ratio_mismatch,
)

__all__ = [
    "binomial_information",
    "binomial_sd",
    "clamp_share",
    "count_resolution_sd",
    "binomial_tail",
    "poisson_ratio_exact_tail",
    "poisson_tail",
    "two_proportion_exact_tail",
    "MIN_EXPECTED_COUNT",
    "SRM_THRESHOLD",
    "ArmComparison",
    "ArmSummary",
    "BlockLengthChoice",
    "BootstrapResult",
    "CohortAnalysis",
    "ComparisonResult",
    "CrossingProbabilities",
    "CupedMeanStats",
    "CupedRatioStats",
    "Decision",
    "DiDResult",
    "Effect",
    "FutilityPlan",
    "GuardrailVerdict",
    "HeterogeneityResult",
    "LookResult",
    "MDEResult",
    "MSPRTResult",
    "MeanStats",
    "MultiArmResult",
    "NonInferiorityResult",
    "PartialPoolingResult",
    "PreTrendResult",
    "RatioStats",
    "RuntimeEstimate",
    "SampleRatioResult",
    "SampleSizeCheck",
    "SampleSizePlan",
    "SequentialDesign",
    "SimpsonResult",
    "Status",
    "SwitchbackDesign",
    "SwitchbackResult",
    "adjust_p_values",
    "analyze_cohorts",
    "autocovariance",
    "benjamini_hochberg_adjust",
    "bonferroni_adjust",
    "bootstrap_difference",
    "bootstrap_quantile_difference",
    "choose_block_length",
    "cochran_q",
    "cohort_mde",
    "compare_to_control",
    "confidence_sequence_halfwidth",
    "crossing_probabilities",
    "cuped_mean_test",
    "cuped_ratio_test",
    "delta_method_ratio_test",
    "difference_in_differences",
    "drift_for_power",
    "dunnett_adjust",
    "estimator_variance",
    "evaluate_guardrails",
    "evaluate_look",
    "holm_adjust",
    "inflation_factor",
    "mde_from_variance",
    "mde_proportions",
    "mixing_variance",
    "mixture_likelihood_ratio",
    "msprt",
    "non_inferiority_test",
    "normal_approximation_adequate",
    "partial_pooling",
    "plan_switchback",
    "pre_trend_test",
    "ratio_variance",
    "rejection_levels",
    "relative_effect",
    "repeated_confidence_interval",
    "runtime_days",
    "sample_ratio_mismatch",
    "sample_size_means",
    "sample_size_proportions",
    "sample_size_ratio",
    "sequential_boundaries",
    "simpson_paradox",
    "spending_function",
    "switchback_design",
    "switchback_test",
    "two_proportion_z_test",
    "update_design",
    "variance_reduction_from_correlation",
    "welch_df",
    "welch_t_test",
]
