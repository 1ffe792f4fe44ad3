#!/usr/bin/env python
"""Write the variables reference from the roles' argument specs: docs/variables.md,
and each role's variables in roles/<role>/README.md between the marker comments
BEGIN and END below (the hand-written rest of a role README is kept as it is).

    .venv/bin/python docs/gen_vars_doc.py           # (re)write docs/variables.md and the role READMEs
    .venv/bin/python docs/gen_vars_doc.py --check   # exit 1 if any of them is out of date

The argument specs (roles/*/meta/argument_specs.yml) are the single source: the
same text `ansible-doc -t role` shows and the role's argument check enforces. A
role default that is a template (it follows an inventory variable) is shown as
the template, with the argument spec's literal default beside it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "variables.md"
BEGIN = ("<!-- BEGIN generated variables: docs/gen_vars_doc.py writes this part from meta/argument_specs.yml;"
         " do not edit it by hand -->")
END = "<!-- END generated variables -->"

# Ansible documentation markup -> Markdown
_MARKUP = [
    (re.compile(r"L\(([^,()]+),\s*([^()]+)\)"), r"[\1](\2)"),
    (re.compile(r"U\(([^()]+)\)"), r"<\1>"),
    (re.compile(r"B\(([^()]+)\)"), r"**\1**"),
    (re.compile(r"I\(([^()]+)\)"), r"*\1*"),
    (re.compile(r"(?:C|O|V|RV|M|P|E)\(((?:[^()]|\([^()]*\))+)\)"), r"`\1`"),
]


def markup(text: str) -> str:
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text


def cell(text: str) -> str:
    """One Markdown table cell: no newline, no bare pipe."""
    return " ".join(str(text).split()).replace("|", "\\|")


def literal(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return "`%s`" % value if value else '`""`'
    return "`%s`" % json.dumps(value, sort_keys=True)


def describe(option: dict) -> str:
    desc = option.get("description", "")
    if isinstance(desc, list):
        desc = " ".join(desc)
    extra = []
    if option.get("choices"):
        extra.append("Choices: " + ", ".join("`%s`" % c for c in option["choices"]) + ".")
    if option.get("no_log") and "logged" not in desc:
        extra.append("Never logged.")
    return markup(" ".join([desc, *extra]))


def type_of(option: dict) -> str:
    kind = option.get("type", "str")
    if kind == "list" and option.get("elements"):
        kind = "list of %s" % option["elements"]
    return kind


def roles() -> list[Path]:
    return [role for role in sorted((REPO / "roles").iterdir()) if (role / "meta" / "argument_specs.yml").exists()]


def role_variables(role: Path) -> list[str]:
    """A role's entry points (### headings), each with its description and variables table."""
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    defaults_file = role / "defaults" / "main.yml"
    defaults = (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {}
    lines = []
    for entry, spec in specs.items():
        title = "`tasks_from: %s`" % entry if entry != "main" else "main entry point"
        lines += ["### %s — %s" % (title, markup(spec.get("short_description", ""))), ""]
        desc = spec.get("description", [])
        for para in [desc] if isinstance(desc, str) else desc:
            lines += [markup(" ".join(para.split())), ""]
        options = spec.get("options", {})
        # an entry point's options that are main's, word for word, are named, not repeated
        main = specs.get("main", {}).get("options", {}) if entry != "main" else {}
        same = sorted(var for var in options if main.get(var) == options[var])
        if same:
            lines += ["As the main entry point: %s." % ", ".join("`%s`" % var for var in same), ""]
            options = {var: option for var, option in options.items() if var not in same}
        if not options:
            lines += [] if same else ["No variables.", ""]
            continue
        lines += ["| variable | type | default | description |", "|---|---|---|---|"]
        for var in sorted(options):
            option = options[var]
            default = literal(option.get("default"))
            role_default = defaults.get(var)
            if isinstance(role_default, str) and "{{" in role_default:
                default = "`%s`" % " ".join(role_default.split())
            elif "default" not in option and var in defaults:
                default = literal(role_default)
            lines.append("| `%s` | %s | %s | %s |" % (
                var, cell(type_of(option)), cell(default), cell(describe(option))))
        lines.append("")
    lines += borrowed(role)
    return lines


_INCLUDE = re.compile(r"name:\s*netfleet\.calico\.(\w+)\s*\n\s*tasks_from:\s*(\w+)")


_IMPORT = re.compile(r"(?:import|include)_tasks:\s*(\S+\.yml)")


def _task_text(role: Path, name: str, seen: set | None = None) -> str:
    """A task file of ``role`` with the task files it imports or includes, recursively."""
    seen = seen if seen is not None else set()
    if name in seen or not (role / "tasks" / name).exists():
        return ""
    seen.add(name)
    text = (role / "tasks" / name).read_text()
    return text + "".join(_task_text(role, other, seen) for other in _IMPORT.findall(text))


def borrowed(role: Path) -> list[str]:
    """The other roles' variables this role reads through include_role (its own spec cannot list them)."""
    lines = []
    tasks = "".join(p.read_text() for p in sorted((role / "tasks").glob("*.yml")))
    used: dict[str, set[str]] = {}
    for other, tasks_from in _INCLUDE.findall(tasks):
        if other == role.name:
            continue
        source = REPO / "roles" / other
        text = _task_text(source, tasks_from + ".yml") + _read(source / "vars" / "main.yml")
        if re.search(r"ansible\.builtin\.template|netfleet\.calico\.render_template", text):
            text += "".join(p.read_text() for p in sorted((source / "templates").rglob("*.j2")))
        used.setdefault(other, set()).update(re.findall(r"\b%s_\w+" % other, text))
    for other, names in sorted(used.items()):
        specs = yaml.safe_load((REPO / "roles" / other / "meta" / "argument_specs.yml").read_text())
        known = set(specs["argument_specs"]["main"].get("options", {}))
        set_here = set(re.findall(r"^\s+(%s_\w+):" % other, tasks, re.M))  # this role passes them itself
        names = sorted((names & known) - set_here)
        if names:
            lines += ["Variables of role `%s` that this role reads too (it runs that role's task files): %s." % (
                other, ", ".join("`%s`" % n for n in names)), ""]
    return lines


def render() -> str:
    lines = [
        "# Variables reference",
        "",
        "<!-- Generated by docs/gen_vars_doc.py from roles/*/meta/argument_specs.yml: do not edit by hand;"
        " scripts/test fails when this file is out of date. -->",
        "",
        "Role variables of the collection, from each role's argument specification (the same text as",
        "`ansible-doc -t role netfleet.calico.<role>`, checked by the role at the start of every run).",
        "Set them in `group_vars`/`host_vars` like any role variable. The inventory variables that describe",
        "the fabric itself (`calico_pool`, `calico_block`, `calico_workloads`, `calico_as_number`,",
        "`calico_bgp_topology`, `calico_ipip_mode`, …) are read by the fabric plan, not by a role: see the",
        "[inventory variables](inventory.md#inventory-variables).",
        "",
        "A default shown as a template follows an inventory variable: for example",
        "`calico_node_bgp_password` defaults to `calico_bgp_password`.",
        "",
    ]
    for role in roles():
        lines += ["## Role `netfleet.calico.%s`" % role.name, ""] + role_variables(role)
    return "\n".join(lines).rstrip("\n") + "\n"


def role_readme(role: Path, current: str) -> str:
    """The role's README with the part between BEGIN and END generated again, the rest kept."""
    start, end = current.find(BEGIN), current.find(END)
    if start < 0 or end < start:
        raise ValueError("roles/%s/README.md has no generated part: put the lines\n%s\n%s\n"
                         "where its variables go" % (role.name, BEGIN, END))
    body = "\n".join(role_variables(role)).strip("\n")
    return current[:start] + BEGIN + "\n\n" + body + "\n\n" + current[end:]


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def generated() -> dict[Path, str]:
    """Every file this script writes, and what it must hold."""
    files = {OUT: render()}
    for role in roles():
        path = role / "README.md"
        files[path] = role_readme(role, _read(path))
    return files


def stale(files: dict[Path, str] | None = None) -> list[Path]:
    """The generated files whose committed text is not what the argument specs give."""
    files = generated() if files is None else files
    return [path for path, text in files.items() if _read(path) != text]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--check", action="store_true",
                        help="fail if docs/variables.md or a role README is out of date")
    args = parser.parse_args()
    try:
        files = generated()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    out_of_date = stale(files)
    if args.check:
        for path in out_of_date:
            name = str(path.relative_to(REPO))
            sys.stdout.writelines(difflib.unified_diff(
                _read(path).splitlines(True), files[path].splitlines(True), name, "generated"))
            print("%s is out of date: run .venv/bin/python docs/gen_vars_doc.py" % name, file=sys.stderr)
        if out_of_date:
            return 1
        print("ok: docs/variables.md and the role READMEs match the roles' argument specs")
        return 0
    for path in out_of_date:
        path.write_text(files[path])
        print("wrote %s" % path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
