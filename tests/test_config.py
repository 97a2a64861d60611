"""Settings: defaults, the commented template, validation with clear errors, the train window."""
from __future__ import annotations

import pytest

from daemon import config as cfg


def test_template_is_the_defaults(tmp_path):
    cfg.init_root(tmp_path)
    loaded = cfg.load(tmp_path)
    fresh = cfg.Config(root=tmp_path.resolve())
    assert loaded == fresh
    for name in cfg.HOT_FOLDERS:
        assert (tmp_path / name).is_dir()


def test_every_setting_is_documented_in_the_template():
    import tomllib

    from daemon.settings import SETTINGS

    parsed = tomllib.loads(cfg.TEMPLATE)
    for s in SETTINGS:
        table = parsed[s.section] if s.section else parsed
        assert table[s.name] == s.default, f"{s.key} is not in the template with its default"
        assert f"# {s.help.split()[0]}" in cfg.TEMPLATE


def test_choices_come_from_the_engine_registries():
    from hotfolders.plugins.convert import COLORS
    from hotfolders.plugins.train import TRAINERS
    from hotfolders.training import LOSSES

    from daemon.settings import BY_KEY

    assert BY_KEY["train.trainer"].allowed() is TRAINERS
    assert BY_KEY["train.loss"].allowed() is LOSSES
    assert BY_KEY["convert.color"].allowed() is COLORS


def test_model_and_target_files(tmp_path):
    config = cfg.Config(root=tmp_path)
    toml = tmp_path / "model.toml"
    toml.write_text('a = "alice"\nb = "bob"\niterations = 500\n[train]\nstop = "iterations"\n'
                    'plateau_gain = 0.05\n[convert]\ncolor = "match-hist"\nblur = 3\n')
    model = cfg.load_model(toml, config)
    assert (model.a, model.b) == ("alice", "bob")
    assert model.train.max_iterations == 500 and model.train.stop == "iterations"
    assert model.train.plateau_gain == 0.05 and model.train.batch_size == 16
    assert model.convert.color == "match-hist" and model.convert.blur == 3
    assert model.explicit == {"max_iterations", "stop", "plateau_gain"}
    target = tmp_path / "clip.toml"
    target.write_text('erode = 2\nconvert_when = "first-save"\n')
    convert = cfg.load_target(target, model.convert)
    assert (convert.erode, convert.color, convert.convert_when) == (2, "match-hist", "first-save")


@pytest.mark.parametrize("name,text,message", [
    ("model.toml", 'a = "x"\nb = "y"\n[convert]\nlabel = false', "only be set in facedrop.toml"),
    ("model.toml", 'a = "x"\nb = "y"\n[train]\nkeep_snapshots = 900', "only be set in"),
    ("model.toml", 'a = "x"\nb = "y"\n[train]\nbatch_size = 0', "train.batch_size must be"),
    ("model.toml", 'a = "x"\nb = "y"\n[train]\nmax_iterations = "lots"', "a whole number"),
    ("model.toml", 'a = "x"\nb = "y"\n[limits]\nstall_seconds = 1', "unknown setting"),
    ("model.toml", 'a = "../x"\nb = "y"', 'needs a = "<person>"'),
    ("clip.toml", 'label = false', "only be set in facedrop.toml"),
    ("clip.toml", 'convert_when = "soon"', "convert.convert_when must be"),
    ("clip.toml", 'blur = -2', "convert.blur must be"),
    ("clip.toml", 'gpu = "0"', "unknown setting"),
])
def test_untrusted_files_may_set_only_their_own_settings(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    config = cfg.Config(root=tmp_path)
    with pytest.raises(cfg.ConfigError, match=message) as err:
        if name == "model.toml":
            cfg.load_model(path, config)
        else:
            cfg.load_target(path, config.convert)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text,message", [
    ("port = 'x'", "port must be a whole number"),
    ("[train]\nstop = 'never'", "train.stop must be one of plateau, iterations"),
    ("[train]\nlearning_rate = true", "train.learning_rate must be a number"),
    ("[convert]\nconvert_when = 'iterations:0'", "convert.convert_when"),
    ("[extract]\nbogus = 1", "unknown setting \\[extract\\] 'bogus'"),
    ("bogus = 1", "unknown setting 'bogus'"),
    ("[train]\nwindow = '25:00-07:00'", "train.window"),
    ("[convert]\ncolor = 'purple'", "convert.color"),
    ("[extract]\nevery_n = 0", "every_n"),
    ("port = [", "not valid TOML"),
])
def test_bad_settings_name_the_file_and_key(tmp_path, text, message):
    (tmp_path / cfg.CONFIG_NAME).write_text(text)
    with pytest.raises(cfg.ConfigError, match=message) as err:
        cfg.load(tmp_path)
    assert str(tmp_path / cfg.CONFIG_NAME) in str(err.value)


def test_training_window():
    assert cfg.window_open("always", 0)
    night = "22:00-07:00"
    assert cfg.window_open(night, 23 * 60) and cfg.window_open(night, 6 * 60 + 59)
    assert not cfg.window_open(night, 12 * 60) and not cfg.window_open(night, 7 * 60)
    assert cfg.window_open("09:00-17:00", 9 * 60) and not cfg.window_open("09:00-17:00", 17 * 60)
