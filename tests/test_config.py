"""Strict config loading: the shipped files load, every option is documented, bad values fail."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from ecgd import config as config_module
from ecgd.config import Config, load_config, parse_config
from ecgd.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "etc" / "ecgd.toml"


def test_shipped_config_loads_with_contract_values() -> None:
    """The shipped etc/ecgd.toml loads and holds the contract keys admins rely on."""
    config = load_config(SHIPPED)
    assert config.model.manifest == Path("/var/lib/ecgd/models/ecgfounder.json")
    assert config.spool.dir == Path("/var/spool/ecgd/incoming")
    assert config.reports.recipients == (Path("/etc/ecgd/recipients/reading-station.pub"),)
    assert config.privacy.pseudonym_key_file == Path("/etc/ecgd/pseudonym.key")
    assert config.serial is None


def test_shipped_config_documents_every_option() -> None:
    """Every field of every section appears in etc/ecgd.toml (set or commented)."""
    text = SHIPPED.read_text()
    for section, cls in config_module._SECTIONS.items():
        assert re.search(rf"^#? ?\[{section}\]", text, re.M), f"[{section}] missing"
        for field in dataclasses.fields(cls):
            assert re.search(rf"^#? ?{field.name} = ", text, re.M), f"{section}.{field.name}"


def test_shipped_defaults_match_code_defaults() -> None:
    """Values written in etc/ecgd.toml equal the dataclass defaults (no silent drift)."""
    shipped = load_config(SHIPPED)
    defaults = Config()
    for section in config_module._SECTIONS:
        if section == "serial":
            continue
        assert getattr(shipped, section) == getattr(defaults, section), section


def test_dev_config_resolves_paths_relative_to_file() -> None:
    """Relative paths in a config file resolve against the file's folder."""
    config = load_config(REPO_ROOT / "etc" / "ecgd-dev.toml")
    assert config.spool.dir == REPO_ROOT / "etc" / ".." / "var" / "spool" / "incoming"


@pytest.mark.parametrize("text, message", [
    ("[model]\nthredas = 2\n", "[model] thredas: unknown key"),
    ("[bogus]\n", "[bogus]: unknown section"),
    ("[model]\nthreads = \"2\"\n", "[model] threads: must be an integer"),
    ("[model]\nthreads = 0\n", "[model] threads: must be between 1 and 64"),
    ("[model]\ninference_workers = 0\n", "[model] inference_workers: must be between 1 and 16"),
    ("[preprocess]\nmains_hz = 55\n", "[preprocess] mains_hz: must be 50 or 60"),
    ("[window]\nstride_s = 20.0\n", "[window] stride_s: must be in (0, seconds]"),
    ("[qc]\nquality_score_min = 1.5\n", "[qc] quality_score_min: must be between 0 and 1"),
    ("[spool]\ndone_dir = \"/var/spool/ecgd/incoming\"\n", "must all differ"),
    ("[limits]\nmax_input_samples = 0\n", "[limits] max_input_samples: must be positive"),
    ("[serial]\nbaudrate = 9600\n", "[serial] port: is required"),
    ("[serial]\nport = \"loop://\"\nformat = \"midi\"\n", "[serial] format"),
    ("[reports]\nrecipients = \"/etc/key.pub\"\n", "[reports] recipients: must be a list"),
    ("[serial]\nport = \"loop://\"\nmax_bridge_ms = -1\n", "[serial] max_bridge_ms"),
    ("[serial]\nport = \"loop://\"\nmax_bridged_fraction = 1.5\n",
     "[serial] max_bridged_fraction"),
    ("[retention]\nmin_free_mib = -1\n", "[retention] min_free_mib: must be >= 0"),
    ("[retention]\nmin_free_mib = inf\n", "[retention] min_free_mib: must be finite"),
    ("[retention]\ndone_max_age_days = nan\n", "[retention] done_max_age_days"),
    ("[retention]\ninterval_s = 0\n", "[retention] interval_s"),
    ("model = 3\n", "[model]: must be a table"),
    ("[model\n", "not valid TOML"),
])
def test_bad_values_are_refused_with_one_line(text: str, message: str) -> None:
    """Each bad value is a ConfigError whose one-line message names the key."""
    with pytest.raises(ConfigError) as excinfo:
        parse_config(text)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_missing_config_file_names_the_file(tmp_path: Path) -> None:
    """A missing config file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_retention_limits_accept_inf_as_no_limit() -> None:
    """inf (TOML's own spelling) keeps done inputs and delivered reports forever."""
    config = parse_config("[retention]\ndone_max_age_days = inf\ndelivered_max_mib = inf\n")
    assert config.retention.done_max_age_days == float("inf")
    assert config.retention.delivered_max_mib == float("inf")
