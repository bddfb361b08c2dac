"""Experiment files: TOML loading, --set overrides, and errors that name the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backtest.cli import main
from backtest.config import RunConfig, load_experiment, parse_override
from backtest.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def experiment(tmp_path: Path, samples_dir: Path) -> Path:
    """A copy of the quickstart experiment pointing at the session's sample data."""
    text = (REPO / "experiments" / "quickstart.toml").read_text()
    text = text.replace(
        'path = "../data/SP500.parquet"', f'path = "{samples_dir / "SP500.parquet"}"'
    )
    text = text.replace('output_dir = "../runs"', 'output_dir = "runs"')
    # A tiny training budget, cached inside the test's folder.
    text = text.replace(
        "timesteps = 98_304, eval_every = 8_192, episode_bars = 252, n_envs = 8, "
        "train_env = { turnover_penalty = 0.001 } }",
        "timesteps = 256, eval_every = 128, episode_bars = 64, "
        f'hyperparameters = {{ n_steps = 8 }}, cache_dir = "{tmp_path / "m"}" }}',
    )
    assert text.count("timesteps = 256") == 2
    # SmolLM2's committed answers, replayed strictly from a copy (a miss fails the test).
    shutil.copytree(REPO / "cassettes" / "quickstart", tmp_path / "c")
    text = text.replace('cassette = "../cassettes/quickstart"', f'cassette = "{tmp_path / "c"}"')
    text = text.replace('record_mode = "new_episodes"', 'record_mode = "none"')
    assert 'record_mode = "none"' in text
    text = text.replace('routing = "routing/', f'routing = "{REPO}/experiments/routing/')
    path = tmp_path / "exp" / "quickstart.toml"
    path.parent.mkdir()
    path.write_text(text)
    return path


def test_shipped_experiments_validate() -> None:
    for path in sorted((REPO / "experiments").glob("*.toml")):
        config = load_experiment(path)
        assert isinstance(config, RunConfig), path
        for data in config.data.paths:  # several for experiments/verdict.toml
            assert Path(data).is_absolute() and data.startswith(str(REPO / "data")), path


def test_relative_paths_are_relative_to_the_file(experiment: Path) -> None:
    config = load_experiment(experiment)
    assert config.output_dir == str(experiment.parent / "runs")
    moved = load_experiment(experiment, output_dir="elsewhere")
    assert moved.output_dir == str(Path("elsewhere").resolve())


def test_overrides_reach_nested_keys_and_list_items(experiment: Path) -> None:
    config = load_experiment(
        experiment,
        [
            "env.fee_bps=2.5",
            "strategies[1].params.fast=5",
            "risk.allow_short=false",
            "name=renamed",
            'splits.evaluate="validation"',
        ],
    )
    assert config.env.fee_bps == 2.5
    assert config.strategies[1].params == {"fast": 5, "slow": 30}
    assert config.risk.allow_short is False
    assert config.name == "renamed"
    assert config.splits.evaluate == "validation"


@given(
    key=st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,3}", fullmatch=True),
    value=st.one_of(
        st.integers(-(10**6), 10**6),
        st.booleans(),
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    ),
)
def test_override_values_keep_their_type(key: str, value: object) -> None:
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    path, parsed = parse_override(f"{key}={text}")
    assert path == key.split(".")
    assert parsed == value and type(parsed) is type(value)


def test_config_errors_name_file_key_and_fix(experiment: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_experiment(experiment, ["env.fee_bp=3", "splits.evaluate=tset", "seed=-1"])
    message = str(info.value)
    assert str(experiment) in message and "3 problem(s)" in message
    assert "env.fee_bp: unknown key. Did you mean 'fee_bps'?" in message
    assert "splits.evaluate" in message and "'test'" in message
    assert "seed: Input should be greater than or equal to 0" in message
    with pytest.raises(
        ConfigError, match=r"strategies\[0\]\.nme: unknown key\. Did you mean 'name'"
    ):
        load_experiment(experiment, ["strategies[0].nme=x"])
    with pytest.raises(ConfigError, match=r"no item \[9\]"):
        load_experiment(experiment, ["strategies[9].name=x"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_experiment(experiment, ["env.fee_bps"])
    with pytest.raises(ConfigError, match=r"\[risk\] table"):
        load_experiment(experiment, ["env.risk.max_leverage=2"])
    broken = experiment.with_name("broken.toml")
    broken.write_text("[data\npath = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML.*line 1"):
        load_experiment(broken)
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(experiment.with_name("missing.toml"))


def test_cli_run_prints_the_summary_and_writes_the_run(
    experiment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", str(experiment), "--no-progress", "--set", "strategies[2].name=coin"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "buy_and_hold" in out and "sma_10_30" in out and "coin" in out and "llm_only" in out
    flat = " ".join(out.split())
    assert "drl_a2c: Sharpe" in flat and "over 2 seeds" in flat
    # The verdict comes first, in words, before the metrics table; 2 seeds is underpowered.
    assert flat.index("Verdict") < flat.index("sma_10_30")
    assert "Underpowered (2 seeds < 10): hybrid" in flat and "than drl_a2c" not in flat
    assert "drl_a2c by" in flat and "Sharpe after cost" in flat
    runs = list((experiment.parent / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "ledger.parquet").exists()
    assert f"Run {runs[0].name} written to" in out.replace("\n", " ")


def test_cli_run_bad_key_exits_1_without_traceback(
    experiment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", str(experiment), "--set", "env.windw=10"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "env.windw" in err and "Did you mean 'window'" in err and "Traceback" not in err


def test_run_id_does_not_depend_on_where_the_data_lives(
    experiment: Path, samples_dir: Path, tmp_path: Path
) -> None:
    from backtest import run

    copy = tmp_path / "copy" / "SP500.parquet"
    copy.parent.mkdir()
    shutil.copy(samples_dir / "SP500.parquet", copy)
    a = run(load_experiment(experiment), write=False)
    b = run(load_experiment(experiment, [f'data.path="{copy}"']), write=False)
    assert a.run_id == b.run_id
    c = run(load_experiment(experiment, ["env.fee_bps=3"]), write=False)
    assert c.run_id != a.run_id


def test_the_llm_table_fills_every_llm_side_and_strategies_win(tmp_path: Path) -> None:
    from backtest.config import RunConfig

    config = RunConfig.model_validate(
        {
            "data": {"path": "x.parquet"},
            "llm": {"routing": "r.toml", "every_n_bars": 5, "max_run_usd": 0.5},
            "strategies": [
                {"name": "sma", "kind": "sma", "params": {"fast": 3, "slow": 9}},
                {"name": "llm", "kind": "llm", "params": {"every_n_bars": 2}},
                {"name": "h", "kind": "hybrid", "seeds": 1, "params": {"drl": {"algo": "A2C"}}},
                {
                    "name": "m",
                    "kind": "meta_rl",
                    "seeds": 1,
                    "params": {"llm": {"mode": "offline"}},
                },
            ],
        }
    )
    sma, llm, hybrid, meta = config.strategies
    assert sma.params == {"fast": 3, "slow": 9}
    assert llm.params == {"routing": "r.toml", "every_n_bars": 2, "max_run_usd": 0.5}
    assert hybrid.params == {
        "drl": {"algo": "A2C"},
        "llm": {"routing": "r.toml", "every_n_bars": 5, "max_run_usd": 0.5},
    }
    assert meta.params["llm"] == {
        "routing": "r.toml",
        "every_n_bars": 5,
        "max_run_usd": 0.5,
        "mode": "offline",
    }
    # Resolved once: validating the dump again changes nothing.
    assert RunConfig.model_validate(config.model_dump()) == config


def test_llm_defaults_and_last_bars_from_the_command_line(
    tmp_path: Path, samples_dir: Path
) -> None:
    from backtest import run
    from backtest.config import load_experiment

    experiment = tmp_path / "e.toml"
    experiment.write_text(
        f"""
[data]
path = "{samples_dir / "SP500.parquet"}"
[splits]
train_end = "2013-01-01"
validation_end = "2016-01-01"
[[strategies]]
name = "sma"
kind = "sma"
"""
    )
    config = load_experiment(
        experiment, ["splits.last_bars=60", f'output_dir="{tmp_path / "runs"}"']
    )
    result = run(config, write=False)
    assert result.summary["bars"] == 60
    assert result.summary["end"].startswith("2018-12-31")
    with pytest.raises(ConfigError, match="last_bars"):
        load_experiment(experiment, ["splits.last_bars=1"])
