"""Every relative link and anchor of README.md, docs/*.md and roles/*/README.md resolves
(tests/docs/check_docs.py's check_links, which scripts/test runs too)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "docs"))
import check_docs  # noqa: E402  (tests/docs is no package)


def test_every_relative_link_and_anchor_of_the_docs_resolves():
    problems = []
    check_docs.check_links(problems)
    assert problems == []


def test_the_readme_docs_and_role_readmes_are_checked():
    pages = {str(p.relative_to(REPO)) for p in check_docs.doc_pages(REPO)}
    assert {"README.md", "docs/inventory.md", "docs/variables.md", "roles/calico_node/README.md",
            "roles/route_reflector/README.md"} <= pages


def test_anchors_follow_githubs_rules():
    assert check_docs.slug("IPIP: when to choose each mode") == "ipip-when-to-choose-each-mode"
    assert check_docs.slug("Fleet status (`playbooks/status.yml`)") == "fleet-status-playbooksstatusyml"
    assert check_docs.slug("Full mesh → route reflectors") == "full-mesh--route-reflectors"
    assert check_docs.slug("bench/chains") == "benchchains"
    assert check_docs.slug("`tasks_from: status` — Read it") == "tasks_from-status--read-it"
    assert check_docs.slug("See [the lab](docs/lab.md)") == "see-the-lab"


def test_broken_links_and_anchors_are_named(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Part\n\n## Part\n")
    (tmp_path / "README.md").write_text(
        "# Top\n\n## Here\n\n"
        "[ok](docs/a.md#part-1) [ok](#here) [ok](https://example.invalid/x#y) ![ok](docs/a.md)\n"
        "[bad anchor](docs/a.md#part-2) [missing](docs/b.md) [bad](#there) [outside](../elsewhere.md)\n"
        "`[in code](nowhere.md)`\n"
        "```\n[in a fence](nowhere.md)\n```\n")
    problems = []
    check_docs.check_links(problems, tmp_path)
    assert problems == [
        "README.md:6: link docs/a.md#part-2: docs/a.md has no heading with that anchor",
        "README.md:6: link docs/b.md: no such file in the repository",
        "README.md:6: link #there: README.md has no heading with that anchor",
        "README.md:6: link ../elsewhere.md: no such file in the repository",
    ]
