"""tripwire.stats: every formula tripwire decides with, pure functions on sufficient statistics.

No I/O and no dependency on the rest of tripwire: numpy, scipy and statsmodels only.
The methods, defaults and conventions are explained in ``docs/statistics.md``.

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
from tripwire.stats.cuped import (
    cuped_mean_test,
    cuped_ratio_test,
    variance_reduction_from_correlation,
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
from tripwire.stats.multiarm import ArmComparison, MultiArmResult, compare_to_control
from tripwire.stats.multiplicity import (
    adjust_p_values,
    benjamini_hochberg_adjust,
    bonferroni_adjust,
    dunnett_adjust,
    holm_adjust,
    rejection_levels,
)
from tripwire.stats.relative import relative_effect
from tripwire.stats.results import ArmSummary, ComparisonResult, Effect, Status
from tripwire.stats.sufficient import CupedMeanStats, CupedRatioStats, MeanStats, RatioStats
from tripwire.stats.validity import (
    SRM_THRESHOLD,
    SampleRatioResult,
    SampleSizeCheck,
    normal_approximation_adequate,
    sample_ratio_mismatch,
)

__all__ = [
    "MIN_EXPECTED_COUNT",
    "SRM_THRESHOLD",
    "ArmComparison",
    "ArmSummary",
    "BootstrapResult",
    "CohortAnalysis",
    "ComparisonResult",
    "CupedMeanStats",
    "CupedRatioStats",
    "Effect",
    "GuardrailVerdict",
    "HeterogeneityResult",
    "MeanStats",
    "MultiArmResult",
    "NonInferiorityResult",
    "PartialPoolingResult",
    "RatioStats",
    "SampleRatioResult",
    "SampleSizeCheck",
    "SimpsonResult",
    "Status",
    "adjust_p_values",
    "analyze_cohorts",
    "benjamini_hochberg_adjust",
    "bonferroni_adjust",
    "bootstrap_difference",
    "bootstrap_quantile_difference",
    "cochran_q",
    "compare_to_control",
    "cuped_mean_test",
    "cuped_ratio_test",
    "delta_method_ratio_test",
    "dunnett_adjust",
    "evaluate_guardrails",
    "holm_adjust",
    "non_inferiority_test",
    "normal_approximation_adequate",
    "partial_pooling",
    "ratio_variance",
    "rejection_levels",
    "relative_effect",
    "sample_ratio_mismatch",
    "simpson_paradox",
    "two_proportion_z_test",
    "variance_reduction_from_correlation",
    "welch_df",
    "welch_t_test",
]
