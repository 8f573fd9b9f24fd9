"""Configuration: file, environment and flags, with errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from flowscope.config import KEYS, build, describe, load_settings
from flowscope.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flowscope.toml"
    path.write_text(text)
    return path


def test_defaults_build_the_documented_system() -> None:
    config = build(load_settings(None, environ={}))
    assert [u.port for u in config.collect.udp] == [2055, 4739]
    assert [t.port for t in config.collect.tcp] == [4739]
    assert config.engine.windows_ms == (1000, 60_000, 3_600_000)
    assert config.engine.time_base == "received"
    assert config.engine.checkpoint_interval_ms == 5000
    assert config.store.retention_for("1s") == 86_400_000
    assert config.store.retention_for("1h") == 365 * 86_400_000
    assert (config.web_host, config.web_port) == ("127.0.0.1", 8080)
    assert config.engine.stats.web.tcp_ports == (80, 443, 8080, 8443)


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, """
[collect]
udp_ports = [9995]
receive_buffer = "8MiB"
[engine]
time_base = "end"
windows = ["1s", "5m", "1h"]
grace = "3s"
[stats]
local_networks = ["10.0.0.0/8", "2001:db8::/32"]
[[views]]
name = "ssh"
filter = "proto tcp and dst port 22"
[store.retention]
"5m" = "7d"
""")
    settings = load_settings(path, environ={"FLOWSCOPE_ENGINE_GRACE": "10s", "FLOWSCOPE_COLLECT_UDP_PORTS": "1,2"},
                             overrides=["engine.grace=250ms"])
    config = build(settings)
    assert [u.port for u in config.collect.udp] == [1, 2]
    assert config.collect.udp[0].receive_buffer_bytes == 8 << 20
    assert config.engine.time_base == "end"
    assert config.engine.windows_ms == (1000, 300_000, 3_600_000)
    assert config.engine.grace_ms == 250
    assert settings.sources["engine.grace"] == "--set engine.grace"
    assert settings.sources["collect.udp_ports"] == "environment FLOWSCOPE_COLLECT_UDP_PORTS"
    assert settings.sources["engine.time_base"] == str(path)
    assert config.engine.stats.local_networks == ("10.0.0.0/8", "2001:db8::/32")
    assert [(v.name, v.filter) for v in config.engine.stats.views] == [("ssh", "proto tcp and dst port 22")]
    assert config.store.retention_for("5m") == 7 * 86_400_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[engine]\ntime_bse = 'end'\n", r"engine.time_bse: unknown setting .*did you mean 'engine.time_base'"),
        ("[engine]\ntime_base = 'arrival'\n", r"engine.time_base: 'arrival' is not one of .* \(from .*toml\)"),
        ("[collect]\nudp_ports = [70000]\n", r"collect.udp_ports\[0\]: 70000 is not a port .*\(from .*toml\)"),
        ("[engine]\ngrace = 'soon'\n", r"engine.grace: 'soon' is not a duration .*\(from .*toml\)"),
        ("[engine]\nwindows = ['7s', '1m']\n", r"1m is not a multiple of 7s"),
        ("[collect]\nreceive_buffer = 'lots'\n", r"collect.receive_buffer: expected a size"),
        ("[[views]]\nname = 'all'\nfilter = 'any'\n", r"'all' is the name of the unfiltered traffic"),
        ("[[views]]\nname = 'x'\n", r"views\[0\] .*needs exactly 'name' and 'filter'"),
        ("[[views]]\nname = 'x'\nfilter = 'proto tcp and'\n", r"column"),
        ("[engine\n", r"flowscope.toml: "),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_write(tmp_path, text), environ={})


def test_environment_and_flag_errors_name_their_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"engine.grace: .* \(from environment FLOWSCOPE_ENGINE_GRACE\)"):
        load_settings(None, environ={"FLOWSCOPE_ENGINE_GRACE": "forever"})
    with pytest.raises(ConfigError, match=r"nonsense: unknown setting \(from environment FLOWSCOPE_NONSENSE\)"):
        load_settings(None, environ={"FLOWSCOPE_NONSENSE": "1"})
    with pytest.raises(ConfigError, match=r"--set 'engine.grace': expected KEY=VALUE"):
        load_settings(None, environ={}, overrides=["engine.grace"])
    with pytest.raises(ConfigError, match=r"config file .* does not exist"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_describe_is_a_valid_toml_document_of_every_key() -> None:
    def flatten(table: dict[str, object], prefix: str = "") -> set[str]:
        keys: set[str] = set()
        for name, value in table.items():
            if isinstance(value, dict):
                keys |= flatten(value, f"{prefix}{name}.")
            else:
                keys.add(f"{prefix}{name}")
        return keys

    assert flatten(tomllib.loads(describe())) == set(KEYS)
