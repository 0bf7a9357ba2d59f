"""Progress in logs: plain lines every N steps when stdout is not a terminal; no "Epoch 0/-2" bar."""

from __future__ import annotations

import re

import lightning as L
import pytest
from lightning.pytorch.callbacks import RichProgressBar
from test_cli import tiny_fit_args

from featurenerf.cli import main
from featurenerf.progress import EpochProgressBar, ProgressLog, default_progress_bar, format_duration

LINE = re.compile(
    r"^step (\d+)/4 \| epoch \d+ \| \d+\.\d\d steps/s \| loss [\d.e+-]+ rgb_coarse [\d.e+-]+ .*psnr [\d.]+ \| ETA \S+"
)


def test_fit_prints_a_line_every_n_steps_when_stdout_is_not_a_terminal(toy_root, tmp_path, capsys):
    # pytest captures stdout: not a terminal, as under nohup, CI or `make demo > log`
    args = tiny_fit_args(toy_root, tmp_path / "runs", "--trainer.max_steps=4", "--progress.every_n_steps=2")
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    steps = [int(m.group(1)) for line in out if (m := LINE.match(line))]
    assert steps == [2, 4], out


def test_no_lines_on_a_terminal_or_when_switched_off(monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert not ProgressLog(when="auto").active and ProgressLog(when="always").active
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert ProgressLog(when="auto").active and not ProgressLog(when="never").active


@pytest.mark.parametrize(("max_epochs", "expected"), [(-1, "Epoch 0"), (3, "Epoch 0/2")])
def test_epoch_display(max_epochs, expected):
    # max_steps or max_time without max_epochs: Lightning's fit sets max_epochs to -1
    shown = {}
    for bar in (EpochProgressBar(), RichProgressBar()):
        trainer = L.Trainer(max_steps=10, callbacks=[bar], logger=False, enable_model_summary=False)
        trainer.fit_loop.max_epochs = max_epochs
        bar.setup(trainer, None, "fit")
        shown[type(bar)] = bar._get_train_description(0).strip()
    assert shown[EpochProgressBar] == expected
    if max_epochs == -1:
        assert shown[RichProgressBar] == "Epoch 0/-2"  # what Lightning's own bar shows


def test_the_cli_installs_the_epoch_bar_unless_bars_are_off():
    assert [type(c) for c in default_progress_bar({}, [])] == [EpochProgressBar]
    assert default_progress_bar({"enable_progress_bar": False}, []) == []
    assert default_progress_bar({}, [EpochProgressBar()]) == []  # a configured bar wins


def test_format_duration():
    assert [format_duration(s) for s in (4.25, 187, 7500)] == ["4.2 s", "3 min 07 s", "2 h 05 min"]


def test_tqdm_bars_update_rarely_in_a_log_file(tmp_path):
    import io

    from featurenerf.console import bar_options

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert bar_options(Terminal()) == {}
    with open(tmp_path / "log", "w") as log:
        assert bar_options(log) == {"mininterval": 30.0, "ascii": True}
