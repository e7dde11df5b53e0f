"""YAML as people read it: multi-line strings (PromQL, message templates) as literal blocks."""

from __future__ import annotations

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def dump_yaml(data: object) -> str:
    """Deterministic YAML: keys in the order given, long lines left whole."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1_000_000)
