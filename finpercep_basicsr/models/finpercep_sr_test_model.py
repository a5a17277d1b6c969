"""Testing of a generator policy on a test set: ``python -m finpercep_basicsr.test -opt options/test/....yml``."""
import json
import os
from copy import deepcopy

from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY

from finpercep_basicsr.metrics.pyiqa_metric import check_pyiqa_weights, is_no_reference
from finpercep_basicsr.models.finpercep_rlhf_model import FinPercepRLHFModel
from finpercep_basicsr.utils.errors import UserInputError


def _needs_gt(metric_opt):
    if metric_opt.get('type') == 'FinPercepPyIQA':
        try:
            return not is_no_reference(metric_opt.get('name'))
        except ValueError as err:
            raise UserInputError(str(err)) from err
    return True  # BasicSR's own metrics (psnr, ssim) compare with the GT


@MODEL_REGISTRY.register()
class FinPercepSRTestModel(FinPercepRLHFModel):
    """Runs a generator (any ``network_g`` of ``FinPercepRLHFModel``) over test sets and reports metrics.

    Builds and loads the policy as the RLHF model does (``path.pretrain_network_g`` holds the
    trained adapters; a released diffusion generator needs none), then calls the policy's test-time
    entry ``infer`` (``network_g.inference`` chooses the released sampler, ``archs.sr_inference``),
    or ``sample`` for BasicSR nets. Every ``FinPercepPyIQA`` metric's weight files are checked
    before the first image, so a missing file is one line naming it and where it goes.

    Options:
        val.metrics: BasicSR metrics (``calculate_psnr``/``calculate_ssim`` with ``crop_border`` and
            ``test_y_channel``) and ``FinPercepPyIQA`` (``name`` as pyiqa names it). On a dataset
            without GT (``SingleImageDataset``) only no-reference metrics may be listed.
        val.save_img, val.suffix: write SR images to ``results/<name>/visualization/<dataset>/``.
    Writes ``results/<name>/metrics_<dataset>.json`` and logs the averages.
    """

    def __init__(self, opt):
        for name, metric_opt in ((opt.get('val') or {}).get('metrics') or {}).items():
            if metric_opt.get('type') == 'FinPercepPyIQA':
                try:
                    check_pyiqa_weights(metric_opt.get('name'))
                except (FileNotFoundError, ValueError) as err:
                    raise UserInputError(f'val.metrics.{name}: {err}') from err
        super().__init__(opt)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """Average every ``val.metrics`` entry over ``dataloader``; optionally save the SR images."""
        dataset_name = dataloader.dataset.opt['name']
        metric_opts = self.opt['val'].get('metrics') or {}
        sums, count = dict.fromkeys(metric_opts, 0.0), 0
        for data in dataloader:
            self.feed_data(data)
            self.test()
            sr_img = tensor2img(self.output)
            gt_img = tensor2img(self.gt) if self.gt is not None else None
            for name, mopt in metric_opts.items():
                if gt_img is None and _needs_gt(mopt):
                    raise UserInputError(f'val.metrics.{name} compares with the GT, but {dataset_name} has none: '
                                         f'list only no-reference metrics for it')
                sums[name] += float(calculate_metric({'img': sr_img, 'img2': gt_img}, deepcopy(mopt)))
            if save_img:
                stem = os.path.splitext(os.path.basename(data['lq_path'][0]))[0]
                suffix = self.opt['val'].get('suffix') or self.opt['name']
                imwrite(sr_img, os.path.join(self.opt['path']['visualization'], dataset_name, f'{stem}_{suffix}.png'))
            count += 1
        self.metric_results = {k: v / max(count, 1) for k, v in sums.items()}
        self._report(dataset_name, count)

    def _report(self, dataset_name, count):
        logger = get_root_logger()
        logger.info(f'Test {dataset_name} ({count} images): '
                    + ', '.join(f'{k} {v:.4f}' for k, v in self.metric_results.items()))
        path = os.path.join(self.opt['path']['results_root'], f'metrics_{dataset_name}.json')
        with open(path, 'w') as f:
            json.dump({'dataset': dataset_name, 'images': count, 'metrics': self.metric_results}, f, indent=2)
        logger.info(f'metrics written to {path}')
