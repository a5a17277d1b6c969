"""Shared start-up of the train/test entries: argument check, option check, CPU-safe BasicSR."""
import argparse
import os
import sys


def _opt_path(argv):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str)
    known, _ = parser.parse_known_args(argv)
    return known.opt


def run_pipeline(pipeline, is_train, argv=None):
    """Validate the option file, then run a BasicSR pipeline rooted at the working folder.

    Args:
        pipeline (callable): ``basicsr.train.train_pipeline`` or ``basicsr.test.test_pipeline``.
        is_train (bool): Whether the ``train`` section is required.
        argv (list[str] | None): Arguments (default ``sys.argv[1:]``); BasicSR re-parses them.

    Returns:
        int: 0 on success, 2 for bad input (message on stderr), 130 when interrupted.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    sys.argv = [sys.argv[0]] + argv  # BasicSR's parse_options reads sys.argv
    # every component into BasicSR's registries before its pipeline reads the option file
    from finpercep_basicsr import archs, data, losses, metrics, models  # noqa: F401
    from finpercep_basicsr.utils import basicsr_compat
    from finpercep_basicsr.utils.errors import EXIT_BAD_INPUT, UserInputError, exit_code_for_user_errors
    from finpercep_basicsr.utils.option_check import check_options

    opt_path = _opt_path(argv)
    if opt_path is None:
        print('error: -opt OPTION_FILE.yml is required', file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        check_options(opt_path, is_train=is_train)
    except UserInputError as err:
        print(f'error: {err}', file=sys.stderr)
        return EXIT_BAD_INPUT
    basicsr_compat.install()
    try:
        code = exit_code_for_user_errors(pipeline, os.getcwd())
    except KeyboardInterrupt:
        print('\ninterrupted: rerun with --auto_resume to continue from the last saved training state',
              file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return code or 0
