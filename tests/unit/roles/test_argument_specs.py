"""Each role's meta/argument_specs.yml documents exactly its defaults, with the same values."""

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[3] / "roles"


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists()))
def test_argument_specs_match_defaults(role):
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted(defaults), f"{role}: documented and default variables differ"
    for name, spec in options.items():
        assert spec.get("description"), f"{role}: {name} has no description"
        assert spec.get("type"), f"{role}: {name} has no type"
        assert spec.get("default") == defaults[name], f"{role}: {name} default {spec.get('default')!r} != {defaults[name]!r}"
        assert name.startswith(role + "_"), f"{role}: {name} is not prefixed with the role's name"
