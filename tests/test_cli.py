"""The ``fastcpa demo`` console command, on small settings (the default run is a few minutes)."""

import numpy as np
import pytest

from fastcpa import cli


@pytest.mark.parametrize("dataset", ["wave", "circle"])
def test_demo_trains_and_reports(capsys, dataset):
    rc = cli.main(["demo", "--dataset", dataset, "--n", "120", "--iters", "4", "--output", "", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "exact mean log-likelihood" in out and "held-out" in out
    start = float(out.split("start")[1].split("log-likelihood")[1].split()[0])
    train = float(out.split("train log-likelihood")[1].split(",")[0])
    assert train > start  # EM climbed (monotone: never below the start)


def test_demo_digits(capsys):
    pytest.importorskip("sklearn")
    assert cli.main(["demo", "--dataset", "digits", "--n", "60", "--iters", "2", "--output", "", "--no-progress"]) == 0
    assert "held-out" in capsys.readouterr().out


def test_unknown_dataset_is_refused():
    with pytest.raises(SystemExit):
        cli.main(["demo", "--dataset", "mnist"])


def test_figure_needs_matplotlib_or_writes_one(tmp_path, capsys):
    """With matplotlib the figure is written; without it the demo says how to get it."""
    cli.main(["demo", "--n", "80", "--iters", "2", "--output", str(tmp_path / "f.png"), "--no-progress"])
    out = capsys.readouterr().out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert 'pip install ".[plot]"' in out
    else:
        assert (tmp_path / "f.png").stat().st_size > 0
