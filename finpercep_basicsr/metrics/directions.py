"""Which way is better for each column that the reports and benchmarks print."""

# full-reference distances, map rates, colour shift and the classical no-reference metrics (pyiqa's flags agree)
LOWER_IS_BETTER = frozenset({'gmsd', 'nlpd', 'mad', 'pdm_rate', 'judge_pdm_rate', 'lpips', 'dists', 'color_shift',
                             'detail_error', 'piqe', 'niqe', 'brisque'})
# columns with no better direction: an artifact index of 1 is GT's, each set-up's own reward is on its own scale, and
# how often a reward ceiling capped the training images describes the recipe, not the result
NEUTRAL = ('artifact_index', 'artifact_ratio', 'own_reward', 'judge_prefers_gt', 'capped_share', 'gain_of_margin')
# the columns of the benchmark's judge: reported as "unfit" while it fails its own check (hacking.claims)
JUDGE_COLUMNS = ('judge_score', 'judge_pdm_rate', 'judge_gain')


def lower_is_better(name, metrics=None):
    """Direction of a column: the flag of a measured pyiqa metric when there is one, else ``LOWER_IS_BETTER``.

    Args:
        name (str): Column name.
        metrics (dict | None): ``{name: (metric, lower_better)}`` of the metrics measured.
    """
    if metrics and name in metrics:
        return metrics[name][1]
    return name in LOWER_IS_BETTER
