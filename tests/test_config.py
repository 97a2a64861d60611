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
    for section in (cfg.Config(), *(kind() for kind in cfg.SECTIONS.values())):
        for name in section.__dataclass_fields__:
            if name == "root" or name in cfg.SECTIONS:
                continue
            assert f"\n{name} =" in cfg.TEMPLATE, f"{name} is not in the template"


@pytest.mark.parametrize("text,message", [
    ("port = 'x'", "port must be int"),
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
