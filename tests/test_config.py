"""Pipeline files and --set overrides: validated before any work, with suggestions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from indvision import config
from indvision.errors import ConfigError
from tests.conftest import write_pipeline

PIPELINE = """
name: demo
seed: 7
stages:
  ingest:
    synthetic: defect
    val_fraction: 0.2
"""


@pytest.fixture
def demo_yaml(tmp_path: Path) -> Path:
    return write_pipeline(tmp_path / "demo.yaml", PIPELINE)


def test_loads_yaml_and_fills_defaults(demo_yaml: Path) -> None:
    spec = config.load_pipeline(str(demo_yaml))
    assert spec.name == "demo" and spec.seed == 7
    ingest = spec.config("ingest")
    assert ingest.val_fraction == 0.2
    assert ingest.test_fraction == 0.15  # default
    assert spec.to_dict()["stages"]["ingest"]["synthetic"] == "defect"


def test_configs_are_frozen(demo_yaml: Path) -> None:
    ingest = config.load_pipeline(str(demo_yaml)).config("ingest")
    with pytest.raises(AttributeError):
        ingest.val_fraction = 0.5


def test_set_overrides_parse_yaml_values(demo_yaml: Path, tmp_path: Path) -> None:
    spec = config.load_pipeline(str(demo_yaml), ["ingest.test_fraction=0.25", "seed=3",
                                                  "ingest.group_regex=^(\\d+)_"])
    assert spec.config("ingest").test_fraction == 0.25
    assert spec.config("ingest").group_regex == "^(\\d+)_"
    assert spec.seed == 3
    assert config.load_pipeline(str(demo_yaml), ["ingest.val_fraction=1e-1"]).config(
        "ingest").val_fraction == 0.1  # YAML reads 1e-1 as text; a float field accepts it
    spec_data = config.load_pipeline(str(demo_yaml), data=str(tmp_path))
    assert spec_data.config("ingest").source == str(tmp_path)


def test_hash_changes_with_config(demo_yaml: Path) -> None:
    a = config.load_pipeline(str(demo_yaml)).hash()
    b = config.load_pipeline(str(demo_yaml), ["ingest.min_side=20"]).hash()
    assert a != b
    assert a == config.load_pipeline(str(demo_yaml)).hash()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ingest.val_fractoin=0.2", "did you mean 'val_fraction'"),
        ("ingset.val_fraction=0.2", "did you mean 'ingest'"),
        ("ingest.min_side=big", "expected an integer"),
        ("ingest.val_fraction=2", "val_fraction"),
        ("ingest", "stage.key=value"),
        ("seed=abc", "seed must be an integer"),
    ],
)
def test_bad_overrides_fail_with_a_clear_message(demo_yaml: Path, override: str,
                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load_pipeline(str(demo_yaml), [override])


def test_unknown_stage_in_yaml_suggests(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path / "p.yaml", "name: p\nstages:\n  ingets: {}\n")
    with pytest.raises(ConfigError, match="did you mean 'ingest'"):
        config.load_pipeline(str(path))


def test_unknown_top_level_key_suggests(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path / "p.yaml", "name: p\nsed: 1\nstages:\n  ingest: {}\n")
    with pytest.raises(ConfigError, match="did you mean 'seed'"):
        config.load_pipeline(str(path))


def test_missing_pipeline_and_missing_data(tmp_path: Path, demo_yaml: Path) -> None:
    with pytest.raises(ConfigError, match=r"no pipeline named 'defcet'.*did you mean 'defect'"):
        config.load_pipeline("defcet")
    with pytest.raises(ConfigError, match="pipeline file not found"):
        config.load_pipeline(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="no such file or folder"):
        config.load_pipeline(str(demo_yaml), data=str(tmp_path / "missing"))


def test_shipped_pipelines_validate() -> None:
    for name in ("defect", "parcel"):
        spec = config.load_pipeline(name)
        assert spec.name == name
        assert next(s for s, _ in spec.stages) == "ingest"


def test_a_moved_setting_names_where_it_lives_now() -> None:
    for stage in ("train", "evaluate"):
        with pytest.raises(ConfigError, match=rf"'{stage}.good_class' moved to 'ingest\."):
            config.load_pipeline("parcel", [f"{stage}.good_class=intact"])
    assert config.load_pipeline("parcel").config("ingest").good_class == "auto"


def test_every_setting_has_a_line_in_the_settings_page() -> None:
    import dataclasses

    from tests.conftest import PROJECT_ROOT

    section = (PROJECT_ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [f"{stage}.{field.name}" for stage in config.STAGES
               for field in dataclasses.fields(config.stage_module(stage).Config)
               if f"`{stage}.{field.name}`" not in section]
    assert not missing, f"docs/settings.md lacks {missing}"
