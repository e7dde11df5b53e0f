"""Chart values the program sets that Helm would silently ignore: keys the chart's values.yaml does not have."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# Keys whose contents are the program's own (Kubernetes objects, config files), not the chart's schema.
FREE_FORM = {"nodeSelector", "tolerations", "affinity", "podAnnotations", "podLabels", "additionalLabels",
             "additionalAnnotations", "resources", "grafana.ini", "datasources", "dashboardProviders",
             "dashboardsConfigMaps"}


def unknown_keys(values: dict[str, Any], defaults: dict[str, Any], path: str = "", templates: str = "") -> list[str]:
    """Keys Helm would silently ignore. Below a default that is empty or free-form, anything goes. A key the
    values file only mentions in a comment counts when the chart's `templates` read it (`.Values.<key>`)."""
    unknown = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in defaults:
            if not re.search(rf"\.Values\.{re.escape(where)}\b", templates):
                unknown.append(where)
        elif isinstance(value, dict) and isinstance(defaults[key], dict) and defaults[key] and key not in FREE_FORM:
            unknown.extend(unknown_keys(value, defaults[key], where, templates))
    return unknown


def template_text(chart: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((chart / "templates").rglob("*")) if p.is_file())
