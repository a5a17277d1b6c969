"""A resumable list of command-line steps: each runs once, its output is logged, reruns skip it."""
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field


@dataclass
class Step:
    """One command of the pipeline.

    Attributes:
        name (str): Short name, also the log file's name.
        cmd (list[str]): The command, exactly as a user would type it (run from the output folder).
        outputs (list[str]): Files that exist once the step is complete; all present = skip.
        what (str): One line for the console and the report.
    """
    name: str
    cmd: list
    outputs: list
    what: str = ''
    env: dict = field(default_factory=dict)


class StepFailed(RuntimeError):
    """A step's command exited non-zero; the message has the log's last lines."""


def _pump(proc, log, echo=True):
    """Copy the child's output to the log and (``echo``) to our stderr unchanged (tqdm bars keep working)."""
    while True:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        log.write(chunk)
        if echo:
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()


def run_steps(steps, workdir, timings_path=None, echo=True, logs_dir=None):
    """Run ``steps`` in order from ``workdir``; returns {name: seconds} (0 for skipped steps).

    A step whose outputs all exist is skipped; a failing step raises ``StepFailed`` and leaves the
    earlier steps' outputs in place, so the next run continues from it. ``echo=False`` sends a
    step's output to its log only (steps running side by side would interleave their bars).
    Logs go to ``logs_dir`` (default ``workdir/logs``).
    """
    logs = logs_dir or os.path.join(workdir, 'logs')
    os.makedirs(logs, exist_ok=True)
    timings = {}
    if timings_path and os.path.isfile(timings_path):
        with open(timings_path) as f:
            timings = json.load(f)
    for index, step in enumerate(steps, 1):
        header = f'[{index}/{len(steps)}] {step.name}: {step.what}'
        if step.outputs and all(os.path.exists(os.path.join(workdir, p)) for p in step.outputs):
            print(f'{header} -- done already, skipped', file=sys.stderr, flush=True)
            timings.setdefault(step.name, 0.0)
            continue
        print(f'{header}\n    $ {" ".join(step.cmd)}', file=sys.stderr, flush=True)
        start = time.time()
        log_path = os.path.join(logs, f'{step.name}.log')
        with open(log_path, 'ab') as log:
            proc = subprocess.Popen(step.cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, **step.env))
            try:
                _pump(proc, log, echo)
                code = proc.wait()
            except BaseException:  # interrupted: stop the step too (training resumes on the next run)
                proc.terminate()
                proc.wait()
                raise
        if code != 0:
            with open(log_path, errors='replace') as f:
                tail = ''.join(f.readlines()[-15:])
            raise StepFailed(f'step {step.name} failed (exit {code}); log: {log_path}\n{tail}')
        missing = [p for p in step.outputs if not os.path.exists(os.path.join(workdir, p))]
        if missing:
            raise StepFailed(f'step {step.name} finished but did not write {", ".join(missing)}; log: {log_path}')
        timings[step.name] = timings.get(step.name, 0.0) + time.time() - start
        if not echo:
            print(f'    {step.name} finished in {time.time() - start:.0f} s', file=sys.stderr, flush=True)
        if timings_path:
            with open(timings_path, 'w') as f:
                json.dump(timings, f, indent=1)
    return timings
