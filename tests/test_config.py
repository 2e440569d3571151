import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from volslice.config import DEFAULT_CONFIG_FILE, PROJECT_ROOT, Config, load_config, save_config, to_dict


def test_default_yaml_lists_every_key_with_the_schema_default():
    assert OmegaConf.to_container(OmegaConf.load(DEFAULT_CONFIG_FILE)) == to_dict(Config())


def test_layering_and_overrides(tmp_path):
    cfg = load_config(PROJECT_ROOT / "configs" / "demo.yaml", overrides=["cache.size=96", "folds.seed=3"])
    assert cfg.cache.size == 96 and cfg.cache.n_slices == 64 and cfg.folds.seed == 3
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert load_config(PROJECT_ROOT / "configs" / "demo.yaml", overrides=["model.weights="]).model.weights == ""


def test_bad_keys_and_types_are_named():
    with pytest.raises(ConfigKeyError, match="not_a_key"):
        load_config(overrides=["cache.not_a_key=1"])
    with pytest.raises(ValidationError, match="size"):
        load_config(overrides=["cache.size=big"])


def test_changed_keys_and_settings_stamp(tmp_path):
    from volslice.config import changed_keys, stamp_settings

    assert changed_keys({"a": {"b": 1, "c": [1]}}, {"a": {"b": 2, "c": [1]}, "d": 0}) == ["a.b", "d"]
    stamp = tmp_path / "settings.yaml"
    assert stamp_settings(stamp, {"size": 96}) == [] and stamp.exists()
    assert stamp_settings(stamp, {"size": 96}) == []
    assert stamp_settings(stamp, {"size": 128}) == ["size"]
    assert "96" in stamp.read_text()  # a refused fingerprint leaves the record alone
    assert stamp_settings(stamp, {"size": 128}, force=True) == [] and "128" in stamp.read_text()


@pytest.mark.parametrize("files", [["demo.yaml"], ["demo.yaml", "demo_organs.yaml"], ["demo_rsna2019.yaml"],
                                   ["rsna2023.yaml"], ["rsna2023.yaml", "rsna2023_organs.yaml"], ["rsna2019.yaml"],
                                   ["bench_cpu.yaml"], ["ablation.yaml"]])
def test_every_shipped_config_loads_and_its_input_is_valid(files):
    """Each file in configs/ (an organ file over its base) loads into the schema, names a known
    competition, and gives the classifier an input its heads can take."""
    from volslice import competitions
    from volslice.data.inputs import InputSpec

    cfg = load_config(*(PROJECT_ROOT / "configs" / name for name in files))
    comp = competitions.get(cfg.competition)
    if comp.label_level == "patient":
        spec = InputSpec.from_config(cfg, comp)
        assert spec.crop <= cfg.cache.size
    assert {p.name for p in (PROJECT_ROOT / "configs").glob("*.yaml")} == {
        "default.yaml", "demo.yaml", "demo_organs.yaml", "demo_rsna2019.yaml", "rsna2023.yaml", "rsna2023_organs.yaml",
        "rsna2019.yaml", "bench_cpu.yaml", "ablation.yaml"}
