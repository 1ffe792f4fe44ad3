"""docs/gen_vars_doc.py (the variables reference and the role READMEs' variables) and tests/docs/check_docs.py
(role spec checks)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen = _load("gen_vars_doc", REPO / "docs" / "gen_vars_doc.py")
check = _load("check_docs", REPO / "tests" / "docs" / "check_docs.py")


def test_markup_becomes_markdown():
    assert gen.markup("C(bird -p) and O(calico_node_state_dir), M(netfleet.calico.calico_bgp_status)") == (
        "`bird -p` and `calico_node_state_dir`, `netfleet.calico.calico_bgp_status`")
    assert gen.markup("B(never) I(this) L(the docs, https://example.invalid) U(https://x.invalid)") == (
        "**never** *this* [the docs](https://example.invalid) <https://x.invalid>")
    assert gen.markup("O(hosts^2) RV(killed[].reason=netns)") == "`hosts^2` `killed[].reason=netns`"


def test_cells_never_break_the_table():
    assert gen.cell("a | b\n  c") == "a \\| b c"


def test_every_option_of_every_role_is_in_the_reference():
    text = gen.render()
    for spec_file in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
        assert "## Role `netfleet.calico.%s`" % spec_file.parent.parent.name in text
        for spec in specs.values():
            for var in spec.get("options", {}):
                assert "| `%s` |" % var in text


def test_the_committed_reference_and_role_readmes_are_current():
    assert (REPO / "docs" / "variables.md").read_text() == gen.render()
    assert gen.stale() == []


def test_a_role_readme_keeps_its_hand_written_parts_and_has_the_variables_table():
    role = REPO / "roles" / "calico_node"
    current = (role / "README.md").read_text()
    stale = current.replace(gen.END, "| `calico_node_gone` | int | `1` | old |\n" + gen.END)
    text = gen.role_readme(role, "# hand-written\n\n" + gen.BEGIN + "\nold\n" + gen.END + "\n\n## Example\n")
    assert text.startswith("# hand-written\n\n" + gen.BEGIN + "\n\n### main entry point")
    assert text.endswith("\n\n" + gen.END + "\n\n## Example\n")
    assert "| `calico_node_bgp_connect_retry` | int | `5` |" in text
    assert gen.role_readme(role, stale) == current


def _copy_of_the_docs(tmp_path, monkeypatch):
    for path in [*REPO.glob("roles/*/meta/*.yml"), *REPO.glob("roles/*/defaults/main.yml"),
                 *REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("roles/*/vars/main.yml"),
                 *REPO.glob("roles/*/templates/*.j2"), *REPO.glob("roles/*/README.md"), REPO / "docs" / "variables.md"]:
        copy = tmp_path / path.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text())
    monkeypatch.setattr(gen, "REPO", tmp_path)
    monkeypatch.setattr(gen, "OUT", tmp_path / "docs" / "variables.md")
    return tmp_path


def test_check_docs_fails_when_a_role_readme_is_out_of_date(tmp_path, monkeypatch):
    root = _copy_of_the_docs(tmp_path, monkeypatch)
    problems = []
    check.check_variables_doc(problems)
    assert problems == []
    readme = root / "roles" / "route_reflector" / "README.md"
    readme.write_text(readme.read_text().replace("Sysctls of the reflector", "Sysctls"))
    check.check_variables_doc(problems)
    assert problems == ["roles/route_reflector/README.md is out of date: run .venv/bin/python docs/gen_vars_doc.py"]
    readme.write_text("# no generated part\n")
    problems = []
    check.check_variables_doc(problems)
    assert len(problems) == 1 and problems[0].startswith("roles/route_reflector/README.md has no generated part")


def test_route_reflector_lists_the_calico_node_variables_it_reads():
    text = gen.render().split("## Role `netfleet.calico.route_reflector`")[1]
    assert "`calico_node_bird_socket`" in text
    assert "`calico_node_host_sysctls`" not in text  # route_reflector passes its own sysctls


def _role(tmp_path, defaults, options):
    role = tmp_path / "roles" / "r"
    (role / "defaults").mkdir(parents=True)
    (role / "meta").mkdir()
    (role / "defaults" / "main.yml").write_text(yaml.safe_dump(defaults))
    spec = {"argument_specs": {"main": {"short_description": "x", "options": options}}}
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(spec))


def test_spec_checks_find_missing_undocumented_and_drifted_defaults(tmp_path, monkeypatch):
    _role(tmp_path, {"r_a": 1, "r_b": "x", "r_c": "{{ other }}"},
          {"r_a": {"type": "int", "default": 2, "description": "A."},
           "r_c": {"type": "str", "default": "y"}})
    monkeypatch.setattr(check, "REPO", tmp_path)
    problems = []
    check.check_role_specs(problems)
    assert "role r: default r_b is not in meta/argument_specs.yml" in problems
    assert "role r: r_a defaults to 1 but the argument spec says 2" in problems
    assert "role r: option r_c has no description" in problems
    assert not any("r_c defaults" in p for p in problems)  # a templated default follows another variable
    assert len(problems) == 3


def test_the_roles_of_the_collection_pass():
    problems = []
    check.check_role_specs(problems)
    assert problems == []
