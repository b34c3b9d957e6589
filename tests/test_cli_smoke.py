"""One smoke test per task: the real CLI, fit then predict, on generated data and a shrunk config."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from specs import ROOT, SPECS

from lightning_cv.cli import build_cli


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_fit_checkpoint_predict(spec, data_root, tmp_path):
    data_dir = spec.make_data(data_root)
    run_dir = tmp_path / "run"
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    common = ["--config", str(ROOT / spec.config), "--data.data_dir", str(data_dir), *spec.smoke_args, *spec.recipe_args, *quiet]
    cli = build_cli(["fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                     "--trainer.limit_val_batches", "2", "--trainer.default_root_dir", str(run_dir)])
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "metrics.csv").is_file()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    metrics = cli.trainer.callback_metrics
    for key in spec.metric_keys:
        assert key in metrics

    # The checkpoint restores the same model, with weights_only loading (torch's default).
    restored = type(cli.model).load_from_checkpoint(last, weights_only=True).eval()
    model = cli.model.eval()
    x = model.example_input_array
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x))

    split = pd.read_csv(run_dir / "split.csv", dtype=str, keep_default_na=False)
    assert set(split["split"]) == {"train", "val"} and not split["id"].duplicated().any()

    # The checkpoint alone predicts what the fully repeated command does, byte for byte.
    pred_dir, alone_dir = tmp_path / "pred", tmp_path / "alone"
    build_cli(["predict", *common, "--ckpt_path", str(last), "--trainer.default_root_dir", str(pred_dir)])
    assert (pred_dir / spec.predict_file).is_file()
    build_cli(["predict", "--ckpt_path", str(last), *quiet, "--trainer.default_root_dir", str(alone_dir)])
    assert (alone_dir / spec.predict_file).read_bytes() == (pred_dir / spec.predict_file).read_bytes()


def test_top_level_help_is_quick_and_lists_every_command():
    """`lightning-cv --help` lists every command with its summary, without importing torch or Lightning."""
    import subprocess
    import sys

    from lightning_cv.cli import COMMANDS, TRAINER_VERBS

    code = ("import sys; from lightning_cv.cli import main; main(['--help']); "
            "print('heavy:', sorted(m for m in ('torch', 'lightning', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.rstrip().endswith("heavy: []")
    for name in (*TRAINER_VERBS, *COMMANDS):
        line = next(line for line in out.splitlines() if line.startswith(f"  {name} "))
        assert len(line.split(maxsplit=1)[1]) > 20, line


def test_a_command_process_ends_after_its_exit_handlers_with_its_output(tmp_path):
    """Run as the process (`main()` on its own command line), a command that succeeded ends without Python's
    module teardown, but after the exit handlers (W&B's run and service teardown among them) and with its
    output written; a failing command exits as before."""
    import subprocess
    import sys

    for name in ("submission", "solution"):
        (tmp_path / f"{name}.csv").write_text("id,label\na,1\nb,2\n")
    code = ("import atexit, sys; from lightning_cv.cli import main; atexit.register(lambda: print('exit handler ran')); "
            "sys.argv = ['lightning-cv', *sys.argv[1:]]; main(); print('after main')")
    run = subprocess.run([sys.executable, "-c", code, "score", "submission.csv", "solution.csv"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.splitlines() == ["accuracy: 1.00000", "exit handler ran"]
    run = subprocess.run([sys.executable, "-c", code, "score", "missing.csv", "solution.csv"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout.splitlines() == ["exit handler ran"] and "missing.csv" in run.stderr


@pytest.mark.slow
def test_a_commands_help_is_kept_between_runs(tmp_path, monkeypatch):
    """`demo --help` built once (importing every task, so Lightning), then printed from the cache without
    importing it; another terminal width (part of the key) asks for a new text."""
    import os
    import subprocess
    import sys

    from lightning_cv.cli.help_text import help_key

    code = ("import sys; from lightning_cv.cli import main; main(['demo', '--help']); "
            "print('lightning imported:', 'lightning' in sys.modules, file=sys.stderr)")
    env = {**os.environ, "LIGHTNING_CV_CACHE": str(tmp_path), "COLUMNS": "80"}
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
                     for _ in range(2))
    assert "--task TASK" in first.stdout and second.stdout == first.stdout
    assert "lightning imported: True" in first.stderr and "lightning imported: False" in second.stderr
    assert len(list((tmp_path / "help").glob("demo-*.txt"))) == 1
    monkeypatch.setenv("COLUMNS", "80")
    narrow = help_key(["demo", "--help"])
    monkeypatch.setenv("COLUMNS", "140")
    assert help_key(["demo", "--help"]) != narrow
