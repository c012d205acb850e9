"""Config schema: YAML + overrides + grid; every error names the key and suggests the closest valid one."""

import pytest

from experiments.config import ConfigError, config_hash, load_experiment, parse_overrides
from experiments.sweep import expand_grid


def _write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_quickstart_loads_with_its_grid():
    cfg, grid = load_experiment("quickstart")
    assert cfg.name == "quickstart" and cfg.data.name == "cluttered_digits"
    assert set(grid) == {"model.backbone", "model.feedback", "model.steps", "train.seed", "exclude"}
    cells = expand_grid(cfg, grid)
    assert len(cells) == 6 and all(len(c.runs) == 2 for c in cells)  # none x 3 steps is excluded
    assert len({c.name for c in cells}) == 6
    assert not any(c.variant["model.feedback"] == "none" and c.variant["model.steps"] == 3 for c in cells)


def test_exclude_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"exclude: unknown key 'model.stepz'"):
        load_experiment(_write(tmp_path, "exclude:\n  - {model.stepz: 3}\n"))
    with pytest.raises(ConfigError, match=r"'exclude' must be a list of mappings"):
        load_experiment(_write(tmp_path, "exclude: {model.steps: 3}\n"))
    cfg, grid = load_experiment(_write(tmp_path, "grid:\n  model.steps: [1]\nexclude:\n  - {model.steps: 1}\n"))
    with pytest.raises(ConfigError, match="every cell is excluded"):
        expand_grid(cfg, grid)


def test_overrides_and_cli_axes():
    cfg, grid = load_experiment("quickstart", ["train.lr=0.5", "model.steps=2", "train.seed=0,1,2",
                                               "model.backbone_args.channels=[8,16,16,32]"])
    assert cfg.train.lr == 0.5 and cfg.model.backbone_args == {"channels": [8, 16, 16, 32]}
    assert "model.steps" not in grid and cfg.model.steps == 2  # a plain override pins a file axis
    assert grid["train.seed"] == [0, 1, 2]
    assert parse_overrides(["a.b=[1,2]", "c=x,y", "grid.d=[3,4]"]) == ({"a.b": [1, 2]}, {"c": ["x", "y"], "d": [3, 4]})


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["train.lrr=0.1"], r"unknown key 'train.lrr' \(did you mean 'train.lr'\?\)"),
        (["modle.steps=2"], r"unknown key 'modle' \(did you mean 'model'\?\)"),
        (["train.lr=abc"], r"bad value for 'train.lr'"),
        (["model.steps=three"], r"bad value for 'model.steps'"),
        (["model.steps=1,x"], r"model.steps"),
        (["train.epochs"], r"not of the form key=value"),
        (["model.readout=max"], r"bad value 'max' for 'model.readout'.*choose from: last, mean"),
        (["log.wandb=offlne"], r"did you mean 'offline'"),
        (["train.amp=maybe"], r"bad value for 'train.amp'"),
        (["+train.new=1"], r"not supported"),
    ],
)
def test_command_line_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_experiment("quickstart", overrides)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr' \(did you mean 'train.lr'\?\)"):
        load_experiment(_write(tmp_path, "train:\n  lrr: 0.1\n"))
    with pytest.raises(ConfigError, match=r"bad value for 'train.epochs'"):
        load_experiment(_write(tmp_path, "train:\n  epochs: many\n"))
    with pytest.raises(ConfigError, match=r"malformed YAML .* at line \d+, column \d+: expected"):
        load_experiment(_write(tmp_path, "train:\n  lr: [0.1\n"))
    with pytest.raises(ConfigError, match=r"grid: unknown key 'model.stepz'"):
        load_experiment(_write(tmp_path, "grid:\n  model.stepz: [1, 2]\n"))
    with pytest.raises(ConfigError, match=r"grid axis 'model.steps' must be a non-empty list"):
        load_experiment(_write(tmp_path, "grid:\n  model.steps: 3\n"))
    with pytest.raises(ConfigError, match=r"bad value for 'model.steps'"):
        load_experiment(_write(tmp_path, "grid:\n  model.steps: [1, x]\n"))
    with pytest.raises(ConfigError, match=r"top level must be a mapping"):
        load_experiment(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match=r"unknown experiment 'quickstrat' \(did you mean 'quickstart'\?\)"):
        load_experiment("quickstrat")
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_experiment(str(tmp_path / "missing.yaml"))


def test_name_defaults_to_file_stem(tmp_path):
    cfg, grid = load_experiment(_write(tmp_path, "train:\n  epochs: 2\n", "my_ablation.yaml"))
    assert cfg.name == "my_ablation" and grid == {} and cfg.train.epochs == 2


def test_config_hash_ignores_seed_but_not_settings():
    cfg, _ = load_experiment("quickstart")
    other, _ = load_experiment("quickstart", ["train.seed=5"])
    changed, _ = load_experiment("quickstart", ["train.epochs=9"])
    assert config_hash(cfg) == config_hash(other) != config_hash(changed)


def test_runtime_keys_do_not_change_the_cell_or_the_run_hash():
    from experiments.config import run_hash

    cfg, _ = load_experiment("quickstart")
    runtime, _ = load_experiment("quickstart", ["train.device=cpu", "train.threads=3", "train.checkpoint_every=5",
                                                "train.compile=true", "log.wandb=disabled", "train.resume=force"])
    assert config_hash(cfg) == config_hash(runtime) and run_hash(cfg) == run_hash(runtime)
    seeded, _ = load_experiment("quickstart", ["train.seed=7"])
    assert config_hash(cfg) == config_hash(seeded) and run_hash(cfg) != run_hash(seeded)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["train.resume=sometimes"], r"choose from: auto, force, never"),
        (["train.average=polyak"], r"choose from: none, ema, swa"),
        (["train.ema_decay=1.5"], r"ema_decay must be strictly between 0 and 1"),
        (["eval.noise=[-0.1]"], r"eval.noise must be a list of non-negative numbers"),
        (["eval.attack_through=[all]"], r"choose from: loop, first"),
        (["data.augment.rotat=5"], r"did you mean 'data.augment.rotate'"),
        (["train.checkpoint_every=-1"], r"must be >= 0"),
    ],
)
def test_runner_switch_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_experiment("quickstart", overrides)
