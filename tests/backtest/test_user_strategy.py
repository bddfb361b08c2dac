"""One path rule, one-file strategies and dates: what a new user writes first.

- Every path in an experiment file is relative to that file; a ``--set`` path to the working
  directory; a sweep's grid paths to the sweep file. The run id does not depend on where the
  checkout lives.
- ``kind = "path/file.py:Class"`` loads a strategy from one file; errors in it are named by
  file and line. The worked example (``experiments/custom_strategy.toml``) runs.
- Dates may be quoted or not, in a file or with ``--set``; a date that is not one is a keyed
  error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from backtest.config import load_experiment
from backtest.engine import run
from backtest.engine.provenance import run_id_for
from backtest.errors import ConfigError
from backtest.strategy_loader import load_strategy_class
from backtest.sweep import expand_grid, load_sweep

ROOT = Path(__file__).resolve().parents[2]
BACKTEST = str(Path(sys.executable).with_name("backtest"))
EXAMPLE = ROOT / "experiments" / "custom_strategy.toml"
SP500 = ROOT / "data" / "SP500.parquet"  # replaced by the session's sample, below


@pytest.fixture(autouse=True)
def _sample_bars(samples_dir: Path) -> None:
    """The S&P 500 sample (written for the session: a fresh clone has no data/)."""
    global SP500
    SP500 = samples_dir / "SP500.parquet"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BACKTEST, *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


def _experiment(folder: Path, strategy_kind: str, params: str = "{}", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.toml"
    path.write_text(
        f"""
name = "user"
output_dir = "out"
{extra}
[data]
path = "{SP500}"
start = "2015-01-01"
end = "2016-12-31"

[[strategies]]
name = "mine"
kind = "{strategy_kind}"
params = {params}
"""
    )
    return path


GOOD = """
from strategies.base import Strategy


class Flip(Strategy):
    def __init__(self, name, *, every=5):
        super().__init__(name)
        self.every = every

    def act(self, obs):
        return self.target(1.0 if (obs.t // self.every) % 2 else 0.0, "flip")
"""


# ----------------------------------------------------------------------------- the example


def test_the_worked_example_runs_from_any_directory(tmp_path: Path) -> None:
    home = tmp_path / "checkout"
    shutil.copytree(ROOT / "experiments", home / "experiments")
    (home / "data").mkdir()
    shutil.copy(SP500, home / "data" / "SP500.parquet")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "runs"
    example = home / "experiments" / EXAMPLE.name
    result = _cli("run", str(example), "--out", str(out), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"momentum", "momentum_short", "buy_and_hold"} <= set(summary["strategies"])
    ledger = pd.read_parquet(run_dir / "ledger.parquet")
    momentum = ledger[ledger["strategy"] == "momentum"]
    assert (momentum["exposure"] != 0).any() and (momentum["exposure"] >= 0).all()
    short = ledger[ledger["strategy"] == "momentum_short"]
    assert (short["exposure"] < 0).any()
    # The strategy file's source is an input of the run id.
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert "code.momentum.py" in json.dumps(manifest)


def test_run_id_is_the_same_wherever_the_checkout_lives(tmp_path: Path) -> None:
    ids = []
    for where in ("a", "b/deeper"):
        home = tmp_path / where
        shutil.copytree(ROOT / "experiments", home / "experiments")
        (home / "data").mkdir(parents=True)
        shutil.copy(SP500, home / "data" / "SP500.parquet")
        ids.append(run_id_for(load_experiment(home / "experiments" / "custom_strategy.toml")))
        config = load_experiment(home / "experiments" / "quickstart.toml")
        llm = config.llm
        assert llm["routing"] == str(home / "experiments" / "routing" / "local.toml")
        assert llm["cassette"] == str(home / "cassettes" / "quickstart")
    assert ids[0] == ids[1]
    # ...and it follows what the strategy file holds.
    edited = tmp_path / "a" / "experiments" / "strategies" / "momentum.py"
    edited.write_text(edited.read_text() + "\n# a comment changes the code\n")
    again = run_id_for(load_experiment(tmp_path / "a" / "experiments" / "custom_strategy.toml"))
    assert again != ids[0]


# ----------------------------------------------------------------------------- path rule


def test_paths_in_the_file_follow_the_file_and_set_paths_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "exps"
    path = _experiment(
        folder,
        "llm",
        '{ routing = "routing/r.toml", cassette = "../tapes/c", prices = "p.toml" }',
        extra='[llm]\nprices = "openrouter"\n',
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_experiment(path)
    params = config.strategies[0].params
    assert params["routing"] == str(folder / "routing" / "r.toml")
    assert params["cassette"] == str(tmp_path / "tapes" / "c")
    assert params["prices"] == str(folder / "p.toml")
    assert config.output_dir == str(folder / "out")
    # The [llm] table's price *name* is not a path.
    assert config.llm["prices"] == "openrouter"

    config = load_experiment(
        path, ["strategies[0].params.routing=mine.toml", "output_dir=o", "llm.cassette=k"]
    )
    assert config.strategies[0].params["routing"] == str(elsewhere / "mine.toml")
    assert config.output_dir == str(elsewhere / "o")
    assert config.llm["cassette"] == str(elsewhere / "k")


def test_a_sweeps_grid_paths_follow_the_sweep_file(tmp_path: Path) -> None:
    experiments = tmp_path / "experiments"
    shutil.copytree(ROOT / "experiments", experiments)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "SP500.parquet").touch()  # validated when the runs read it
    spec = load_sweep(experiments / "sweeps" / "routing.toml")
    points = expand_grid(spec)
    routings = {p.config.strategies[5].params["llm"]["routing"] for p in points}
    assert routings == {
        str(experiments / "routing" / f"{n}.toml")
        for n in ("seed_stack", "budget_stack", "no_vision")
    }
    assert {p.config.llm["cassette"] for p in points} == {
        str(tmp_path / "cassettes" / "sweep-routing")
    }


# ----------------------------------------------------------------------------- dates


def test_dates_may_be_quoted_or_not_in_the_file_and_in_set(tmp_path: Path) -> None:
    path = _experiment(tmp_path, "buy_and_hold", extra="")
    text = path.read_text().replace('start = "2015-01-01"', "start = 2015-01-01")
    path.write_text(text)
    config = load_experiment(
        path,
        [
            "data.end=2016-06-30",
            "splits.train_end=2015-06-01",
            "splits.validation_end=2016-01-01T00:00:00",
        ],
    )
    assert config.data.start == "2015-01-01"
    assert config.data.end == "2016-06-30"
    assert config.splits.train_end == "2015-06-01"
    assert config.splits.validation_end == "2016-01-01T00:00:00"
    result = run(config, write=False)
    assert result.summary["strategies"]["buy_and_hold"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("splits.train_end=2013-13-01", "splits.train_end"),
        ('data.start="last tuesday"', "data.start"),
        ('data.max_gap="seven days"', "data.max_gap"),
    ],
)
def test_a_date_that_is_not_one_is_a_keyed_error(tmp_path: Path, override: str, key: str) -> None:
    path = _experiment(tmp_path, "buy_and_hold")
    overrides = [override]
    if "train_end" in override:
        overrides.append("splits.validation_end=2016-01-01")
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    message = str(info.value)
    assert key in message and "Fix:" in message
    assert "YYYY-MM-DD" in message or "7D" in message


def test_the_cli_reports_a_bad_date_without_a_traceback(tmp_path: Path) -> None:
    path = _experiment(tmp_path, "buy_and_hold")
    path.write_text(path.read_text().replace('start = "2015-01-01"', 'start = "2015-02-30"'))
    result = _cli("run", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "data.start" in result.stderr and "2015-02-30" in result.stderr


# ----------------------------------------------------------------------------- user code


def test_a_strategy_file_beside_the_experiment_runs(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(GOOD)
    path = _experiment(tmp_path, "mine.py:Flip", "{ every = 3 }")
    result = run(load_experiment(path), write=False)
    ledger = result.ledger
    positions = ledger.loc[ledger["strategy"] == "mine", "exposure"]
    assert (positions > 0).any() and (positions == 0).any()


@pytest.mark.parametrize(
    ("source", "needles"),
    [
        ("def broken(:\n    pass\n", ["mine.py:1", "syntax error"]),
        ("import math\n\nx = 1 / 0\n", ["mine.py:3", "ZeroDivisionError"]),
        (GOOD.replace("class Flip", "class Flop"), ["no class 'Flip'", "Flop"]),
    ],
)
def test_errors_while_loading_a_strategy_file_name_the_file_and_line(
    tmp_path: Path, source: str, needles: list[str]
) -> None:
    (tmp_path / "mine.py").write_text(source)
    path = _experiment(tmp_path, "mine.py:Flip")
    config = load_experiment(path)
    with pytest.raises(ConfigError) as info:
        run(config, write=False)
    message = str(info.value)
    assert "strategies[0].kind" in message and "Fix:" in message
    for needle in needles:
        assert needle in message


def test_an_error_in_the_constructor_names_the_line(tmp_path: Path) -> None:
    source = GOOD.replace("self.every = every", "self.every = every\n        self.rate = 1 / every")
    (tmp_path / "mine.py").write_text(source)
    line = source.splitlines().index("        self.rate = 1 / every") + 1
    path = _experiment(tmp_path, "mine.py:Flip", "{ every = 0 }")
    with pytest.raises(ConfigError) as info:
        run(load_experiment(path), write=False)
    message = str(info.value)
    assert "strategies[0]" in message and "ZeroDivisionError" in message
    assert f"{tmp_path / 'mine.py'}:{line} in __init__" in message


def test_a_missing_strategy_file_says_what_paths_are_relative_to(tmp_path: Path) -> None:
    path = _experiment(tmp_path, "nowhere/mine.py:Flip")
    with pytest.raises(ConfigError) as info:
        load_strategy_class(load_experiment(path).strategies[0].kind, "strategies[0]")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "mine.py") in message
    assert "relative to that file" in message
