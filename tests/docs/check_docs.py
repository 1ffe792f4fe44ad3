#!/usr/bin/env python
"""The collection's documentation checks (run by scripts/test):

1. `ansible-doc` renders every plugin (modules, filters, connection) and every
   role, and every plugin has EXAMPLES (one ansible-doc run per plugin type);
2. every role has meta/argument_specs.yml, every variable of its
   defaults/main.yml is an option of it (or listed in UNSPECIFIED with the
   reason), every option has a description and a type, and an option's literal
   default equals the role default;
3. docs/variables.md is what docs/gen_vars_doc.py generates from those specs.

    .venv/bin/python tests/docs/check_docs.py     (ansible-doc must be on PATH)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
NS = "netfleet.calico"

# role variables deliberately left out of the argument spec: role -> {variable: reason}
UNSPECIFIED = {
    "calico_node": {
        "calico_node_fabric": "the whole fleet's plan: templating it for the argument check on every host is "
                              "O(hosts^2) (the spec's description says so)",
    },
}


def plugins() -> dict[str, list[str]]:
    found = {
        "module": sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__"),
        "filter": sorted(p.stem for p in (REPO / "plugins" / "filter").glob("*.yml")),
        "connection": sorted(p.stem for p in (REPO / "plugins" / "connection").glob("*.py") if p.stem != "__init__"),
        "role": sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir()),
    }
    return {kind: names for kind, names in found.items() if names}


def ansible_doc(kind: str, names: list[str]) -> dict:
    cmd = ["ansible-doc", "--json", "-t", kind, *("%s.%s" % (NS, n) for n in names)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit("ansible-doc -t %s failed:\n%s" % (kind, proc.stderr[-3000:]))
    return json.loads(proc.stdout)


def check_plugins(problems: list[str]) -> int:
    count = 0
    for kind, names in plugins().items():
        docs = ansible_doc(kind, names)
        for name in names:
            fqcn = "%s.%s" % (NS, name)
            entry = docs.get(fqcn)
            count += 1
            if not entry:
                problems.append("%s %s: ansible-doc rendered nothing" % (kind, fqcn))
                continue
            if kind == "role":
                if not entry.get("entry_points", {}).get("main"):
                    problems.append("role %s: no main entry point in meta/argument_specs.yml" % fqcn)
                continue
            if not entry.get("doc", {}).get("short_description"):
                problems.append("%s %s: DOCUMENTATION has no short_description" % (kind, fqcn))
            if not (entry.get("examples") or "").strip():
                problems.append("%s %s: no EXAMPLES" % (kind, fqcn))
    return count


def check_role_specs(problems: list[str]) -> None:
    for role in sorted(p for p in (REPO / "roles").iterdir() if p.is_dir()):
        spec_file = role / "meta" / "argument_specs.yml"
        if not spec_file.exists():
            problems.append("role %s: no meta/argument_specs.yml" % role.name)
            continue
        specs = yaml.safe_load(spec_file.read_text()).get("argument_specs") or {}
        if "main" not in specs:
            problems.append("role %s: argument_specs has no main entry point" % role.name)
        options = {}
        for entry, spec in specs.items():
            if not spec.get("short_description"):
                problems.append("role %s, entry point %s: no short_description" % (role.name, entry))
            for var, option in (spec.get("options") or {}).items():
                options.setdefault(var, option)
                if not option.get("description"):
                    problems.append("role %s: option %s has no description" % (role.name, var))
                if not option.get("type"):
                    problems.append("role %s: option %s has no type" % (role.name, var))
        defaults_file = role / "defaults" / "main.yml"
        defaults = (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {}
        skip = UNSPECIFIED.get(role.name, {})
        for var, value in defaults.items():
            if var in skip:
                continue
            if var not in options:
                problems.append("role %s: default %s is not in meta/argument_specs.yml" % (role.name, var))
                continue
            templated = isinstance(value, str) and "{{" in value
            if "default" in options[var] and not templated and value is not None and options[var]["default"] != value:
                problems.append("role %s: %s defaults to %r but the argument spec says %r"
                                % (role.name, var, value, options[var]["default"]))


def check_variables_doc(problems: list[str]) -> None:
    sys.path.insert(0, str(REPO / "docs"))
    import gen_vars_doc  # pylint: disable=import-outside-toplevel

    current = gen_vars_doc.OUT.read_text() if gen_vars_doc.OUT.exists() else ""
    if current != gen_vars_doc.render():
        problems.append("docs/variables.md is out of date: run .venv/bin/python docs/gen_vars_doc.py")


def main() -> int:
    problems: list[str] = []
    count = check_plugins(problems)
    check_role_specs(problems)
    check_variables_doc(problems)
    for problem in problems:
        print("FAIL: " + problem)
    if problems:
        return 1
    print("ok: %d plugins and roles render with ansible-doc, every plugin has EXAMPLES; role argument specs "
          "cover their defaults; docs/variables.md is up to date" % count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
