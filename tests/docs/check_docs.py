#!/usr/bin/env python
"""The collection's documentation checks (run by scripts/test):

1. `ansible-doc` renders every plugin (modules, filters, connection) and every
   role of both collections, netfleet.calico (the repository root) and
   netfleet.calico_lab (lab/), and every plugin has EXAMPLES (one ansible-doc
   run per collection and plugin type);
2. every role has meta/argument_specs.yml, every variable of its
   defaults/main.yml is an option of it (or listed in UNSPECIFIED with the
   reason), every option has a description and a type, and an option's literal
   default equals the role default;
3. docs/variables.md and the variables part of every roles/<role>/README.md are
   what docs/gen_vars_doc.py generates from those specs;
4. every relative link of README.md, docs/*.md and roles/*/README.md points at a
   file that exists, and every anchor (#...) at a heading of its page, by
   GitHub's rules.

    .venv/bin/python tests/docs/check_docs.py     (ansible-doc must be on PATH)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# collection name -> its root in the checkout
COLLECTIONS = {"netfleet.calico": REPO, "netfleet.calico_lab": REPO / "lab"}

# role variables deliberately left out of the argument spec: role -> {variable: reason}
UNSPECIFIED = {
    "calico_node": {
        "calico_node_fabric": "the whole fleet's plan: templating it for the argument check on every host is "
                              "O(hosts^2) (the spec's description says so)",
    },
    "ipip": {
        "ipip_fabric": "the whole fleet's plan, as calico_node_fabric",
    },
    "spine": {
        "spine_fabric": "the whole fleet's plan, as calico_node_fabric",
    },
}


def plugins(root: Path) -> dict[str, list[str]]:
    found = {
        "module": sorted(p.stem for p in (root / "plugins" / "modules").glob("*.py") if p.stem != "__init__"),
        "filter": sorted(p.stem for p in (root / "plugins" / "filter").glob("*.yml")),
        "lookup": sorted(p.stem for p in (root / "plugins" / "lookup").glob("*.py") if p.stem != "__init__"),
        "connection": sorted(p.stem for p in (root / "plugins" / "connection").glob("*.py") if p.stem != "__init__"),
        "callback": sorted(p.stem for p in (root / "plugins" / "callback").glob("*.py") if p.stem != "__init__"),
        "role": sorted(p.name for p in (root / "roles").iterdir() if p.is_dir()) if (root / "roles").is_dir() else [],
    }
    return {kind: names for kind, names in found.items() if names}


def ansible_doc(ns: str, kind: str, names: list[str]) -> dict:
    cmd = ["ansible-doc", "--json", "-t", kind, *("%s.%s" % (ns, n) for n in names)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit("ansible-doc -t %s failed:\n%s" % (kind, proc.stderr[-3000:]))
    return json.loads(proc.stdout)


def check_plugins(problems: list[str]) -> int:
    count = 0
    for ns, root in COLLECTIONS.items():
        count += check_collection(ns, root, problems)
    return count


def check_collection(ns: str, root: Path, problems: list[str]) -> int:
    count = 0
    for kind, names in plugins(root).items():
        docs = ansible_doc(ns, kind, names)
        for name in names:
            fqcn = "%s.%s" % (ns, name)
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

    try:
        out_of_date = gen_vars_doc.stale()
    except ValueError as exc:
        problems.append(str(exc))
        return
    for path in out_of_date:
        problems.append("%s is out of date: run .venv/bin/python docs/gen_vars_doc.py"
                        % path.relative_to(gen_vars_doc.REPO))


_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)[\s#]*$")
_CODE_SPAN = re.compile(r"(`+).+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_pages(repo: Path) -> list[Path]:
    """The Markdown pages whose links are checked: the README, docs/ and the role READMEs."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md")), *sorted(repo.glob("roles/*/README.md"))]


def _prose(text: str):
    """(line number, line) of every line outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lowercased, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts with its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of a page; a repeated heading gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _number, line in _prose(page.read_text()):
        match = _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = counts.get(base, 0)
            counts[base] = count + 1
            found.add("%s-%d" % (base, count) if count else base)
    return found


def check_links(problems: list[str], repo: Path | None = None) -> None:
    """Every relative link of the doc pages leads to a file of the repository, and its anchor to a heading."""
    repo = (repo or REPO).resolve()
    for page in doc_pages(repo):
        for number, line in _prose(page.read_text()):
            for target in _LINK.findall(_CODE_SPAN.sub("code", line)):
                if _SCHEME.match(target):
                    continue
                path, _hash, anchor = target.partition("#")
                dest = (page.parent / path).resolve() if path else page
                where = "%s:%d: link %s" % (page.relative_to(repo), number, target)
                if not (dest == repo or repo in dest.parents) or not dest.exists():
                    problems.append("%s: no such file in the repository" % where)
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    problems.append("%s: %s has no heading with that anchor" % (where, dest.relative_to(repo)))


def main() -> int:
    problems: list[str] = []
    count = check_plugins(problems)
    check_role_specs(problems)
    check_variables_doc(problems)
    check_links(problems)
    for problem in problems:
        print("FAIL: " + problem)
    if problems:
        return 1
    print("ok: %d plugins and roles of %s render with ansible-doc, every plugin has EXAMPLES; role argument specs "
          "cover their defaults; docs/variables.md and the role READMEs are up to date; every relative link of the "
          "docs resolves" % (count, " and ".join(COLLECTIONS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
