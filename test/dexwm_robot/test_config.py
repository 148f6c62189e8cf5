import re
from dataclasses import dataclass

import pytest

from dexwm_robot.config import ConfigError, load_section


@dataclass
class Inner:
    a: int
    b: list[float]


@dataclass
class Outer:
    name: str
    inner: Inner


def test_load_section_builds_nested_dataclasses(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("top:\n  name: n\n  inner: {a: 3, b: [1.0, 2.5]}\n")
    cfg = load_section(Outer, p, "top")
    assert cfg == Outer("n", Inner(3, [1.0, 2.5]))


@pytest.mark.parametrize(
    "text, message",
    [
        ("top:\n  name: n\n  inner: {a: 3, b: [1.0], c: 2}\n", "unknown key(s) ['c']"),
        ("top:\n  name: n\n", "missing key(s) ['inner']; required: ['inner', 'name']"),
        ("other: {}\n", "missing section 'top'"),
        ("top: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "mapping at top level"),
    ],
)
def test_malformed_files_get_specific_errors(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_section(Outer, p, "top")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="parameter file not found"):
        load_section(Outer, tmp_path / "nope.yaml", "top")


def test_project_sim_config_loads():
    from dexwm_robot.scene import load_sim_config

    scene, camera = load_sim_config()
    assert len(scene.objects) >= 6 and camera.width > 0


@dataclass
class WithOptional:
    name: str
    inner: Inner | None = None


def test_from_dict_builds_optional_nested_dataclasses():
    from dexwm_robot.config import from_dict

    built = from_dict(WithOptional, {"name": "x", "inner": {"a": 1, "b": [2.0]}}, "w")
    assert built.inner == Inner(a=1, b=[2.0])
    assert from_dict(WithOptional, {"name": "x", "inner": None}, "w").inner is None
    assert from_dict(WithOptional, {"name": "x"}, "w").inner is None
    with pytest.raises(ConfigError, match=r"w\.inner: unknown key\(s\) \['c'\]"):
        from_dict(WithOptional, {"name": "x", "inner": {"a": 1, "b": [], "c": 0}}, "w")
