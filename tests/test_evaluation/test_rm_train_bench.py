"""scripts/bench_rm_train.py: every set-up of the RM training step timed side by side on the option file's model."""
import pytest
from tests.helpers.opt import write_options

from finpercep_basicsr.evaluation.rm_train_bench import run_rm_train_bench
from finpercep_basicsr.utils.errors import UserInputError


def test_the_bench_times_uncached_and_cached_steps_of_the_option_files_model(tmp_path, capsys):
    opt = write_options(tmp_path / 'rm.yml', dataroot=tmp_path, train__freeze_encoder=True,
                        train__encoder_trainable=['levels.3.*'], train__feature_cache={'max_gb': 1})
    rates = run_rm_train_bench(opt, size=32, batch_size=2, repeats=2, threads=1, bf16=True)
    assert set(rates) == {'uncached', 'cached', 'cached, levels only', 'uncached bf16', 'cached bf16',
                          'cached, levels only bf16'} and all(r > 0 for r in rates.values())
    table = capsys.readouterr().out
    # the option file's own cache is not the uncached row's
    from finpercep_basicsr.evaluation.rm_train_bench import _model
    from finpercep_basicsr.utils.option_check import load_option_file
    assert _model(load_option_file(opt), {}).feature_cache is None
    assert 'batch 2 x (SR, syn, GT) at 32 px' in table and '| uncached | ' in table and '| 1.00x |' in table


def test_the_bench_names_a_recipe_without_a_frozen_encoder(tmp_path):
    with pytest.raises(UserInputError, match='train.freeze_encoder is off'):
        run_rm_train_bench(write_options(tmp_path / 'rm.yml', dataroot=tmp_path), size=32, batch_size=1)
    with pytest.raises(UserInputError, match='RM option file not found'):
        run_rm_train_bench(str(tmp_path / 'missing.yml'))
