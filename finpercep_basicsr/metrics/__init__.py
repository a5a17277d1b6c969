"""Validation metrics of the reward model, registered in BasicSR's METRIC_REGISTRY (FinPercep names)."""
from finpercep_basicsr.metrics.finpercep_rm_metric import (METRICS, cc, kld, map_auc, map_mae, nss, plcc, srcc,  # noqa: F401
                                                           triplet_accuracy)
