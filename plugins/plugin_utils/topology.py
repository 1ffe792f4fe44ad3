# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fabric picture: Graphviz source and a self-contained HTML page from one fabric_status analysis.

- racks are clusters (``id="rack-<rack>"``), reflectors and hosts nodes (``id="host-<host>"``,
  class ``host node|reflector ok|problem``), with node IP, block(s) (IPv6 ones too in dual stack) and workload
  count;
- every BGP session is one edge (``id="session-<a>--<b>"``, class ``session up|down state-<state>``
  and ``planned|unplanned``), each half coloured by what that end's BIRD says: Established green,
  connecting (Connect/Active/OpenSent/OpenConfirm) amber, any other state red, a missing end grey;
  its tooltip (SVG ``<title>``) says both ends' states.

Every name reaches Graphviz as a quoted, escaped string (``"``, ``\\`` and ``&``; Graphviz escapes ``<``,
``>`` and ``"`` for SVG) and the
page as ``html.escape`` text; DOM ids are names reduced to ``[A-Za-z0-9_.-]`` (plus a hash when
that changed them).
"""

from __future__ import annotations

import hashlib
import html
import re

from ansible.errors import AnsibleFilterError

COLOURS = {"established": "#2e7d32", "connecting": "#f9a825", "down": "#c62828", "missing": "#9e9e9e"}
FONT = "DejaVu Sans,Helvetica,Arial,sans-serif"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def dom_id(prefix, name):
    """A DOM id for ``name``: ``<prefix>-<name>``, names outside [A-Za-z0-9_.-] reduced and hashed."""
    name = str(name)
    if _SAFE_ID.match(name):
        return "%s-%s" % (prefix, name)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:40]
    return "%s-%s-%s" % (prefix, slug or "x", hashlib.sha1(name.encode("utf-8")).hexdigest()[:8])


def session_dom_id(session):
    return dom_id("session", session["id"])


def dq(text):
    """A Graphviz double-quoted string: backslashes doubled so names never become escapes (\\N, \\n...),
    ``&`` as ``&amp;`` since Graphviz reads entities (``&amp;``, ``&#60;``) in strings."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    text = text.replace("&", "&amp;")
    return '"%s"' % text


def label(*lines):
    """A multi-line Graphviz label: each line escaped, joined by Graphviz's centred line break."""
    return dq("\x00".join(str(x) for x in lines if x not in (None, ""))).replace("\x00", "\\n")


def _attrs(**kw):
    return "[%s]" % ", ".join("%s=%s" % (k, v) for k, v in kw.items())


def _end_text(end):
    if end is None:
        return "?"
    text = "%s: %s" % (end["host"], end["state"] if end["state"] == "missing" else end.get("info") or end["state"])
    if end["state"] == "missing" and end.get("info"):
        text += " (%s)" % end["info"]
    if end.get("protocol"):
        text += " [%s]" % end["protocol"]
    if end.get("since") and end["state"] != "missing":
        text += " since %s" % end["since"]
    return text


def session_title(s):
    head = "%s -- %s: %s%s" % (s["a"], s["b"], s["state"], "" if s["planned"] else " (not in the plan)")
    return "; ".join([head] + [_end_text(s["ends"].get(h)) for h in (s["a"], s["b"]) if h in s["ends"]])


def _host_lines(h):
    lines = [h["name"]]
    if h["role"] == "reflector":
        lines.append("route reflector")
    if h["node_ip"]:
        lines.append(h["node_ip"])
    blocks = h.get("blocks") or ([h["block"]] if h["block"] else [])
    if blocks:
        lines.append("block%s %s" % ("s" if len(blocks) > 1 else "", ", ".join(blocks)))
    if h.get("blocks_v6"):
        lines.append("IPv6 block%s %s" % ("s" if len(h["blocks_v6"]) > 1 else "", ", ".join(h["blocks_v6"])))
    if h["workloads"]:
        lines.append("%d workload%s" % (h["workloads"], "" if h["workloads"] == 1 else "s"))
    lines.append("sessions %d/%d" % (h["sessions_up"], h["sessions_total"]))
    if not h["bird_running"]:
        lines.append("BIRD down" if h["reached"] else "not reached")
    elif h["missing_blocks"]:
        lines.append("missing %d block%s" % (len(h["missing_blocks"]), "" if len(h["missing_blocks"]) == 1 else "s"))
    return lines


def render_dot(analysis, title="netfleet.calico fabric"):
    """Graphviz source (undirected graph ``fabric``) of an analysis (plugin_utils.fabric_status.analyse)."""
    out = ["graph fabric {",
           "  graph %s;" % _attrs(id=dq("fabric"), label=label(title, analysis["summary"]), labelloc="t",
                                  fontname=dq(FONT), fontsize="14", rankdir="TB", nodesep="0.35", ranksep="0.9",
                                  bgcolor=dq("white"), pad="0.2"),
           "  node %s;" % _attrs(shape="box", style=dq("rounded,filled"), fontname=dq(FONT), fontsize="10",
                                 fillcolor=dq("#ffffff"), color=dq("#37474f"), margin=dq("0.12,0.05")),
           "  edge %s;" % _attrs(penwidth="2.2", fontname=dq(FONT), fontsize="9")]
    hosts = analysis["hosts"]

    def node(name, indent):
        h = hosts[name]
        problem = bool(h["problems"])
        fill = "#e3f2fd" if h["role"] == "reflector" else "#f1f8e9"
        if not h["bird_running"]:
            fill = "#eceff1"
        tip = "; ".join(h["problems"]) if problem else "%s: converged" % name
        return "%s%s %s;" % (indent, dq(name), _attrs(
            id=dq(dom_id("host", name)), label=label(*_host_lines(h)),
            **{"class": dq("host %s %s" % (
                "reflector" if h["role"] == "reflector" else "node", "problem" if problem else "ok"))},
            shape="box3d" if h["role"] == "reflector" else "box",
            fillcolor=dq(fill), color=dq(COLOURS["down"] if problem else "#37474f"),
            penwidth="2" if problem else "1", tooltip=dq(tip)))

    placed = set()
    for i, rack in enumerate(analysis["racks"].values()):
        members = [n for n in rack["hosts"] if n in hosts]
        if rack["name"] == "-":
            out.extend(node(n, "  ") for n in members)
            placed.update(members)
            continue
        out.append("  subgraph %s {" % dq("cluster_%d" % i))
        out.append("    graph %s;" % _attrs(
            id=dq(dom_id("rack", rack["name"])),
            **{"class": dq("rack %s" % ("ok" if rack["converged"] else "problem"))},
            label=label("%s  AS %s" % (rack["name"], rack["as_number"] if rack["as_number"] is not None else "-"),
                        "sessions %d/%d" % (rack["sessions_up"], rack["sessions_total"])),
            style=dq("rounded"), color=dq("#607d8b" if rack["converged"] else COLOURS["down"]),
            fontsize="12", tooltip=dq("rack %s" % rack["name"])))
        # reflectors on top: a rank of their own inside the rack
        refl = [n for n in members if hosts[n]["role"] == "reflector"]
        out.extend(node(n, "    ") for n in refl)
        if len(refl) > 1:
            out.append("    { rank=same; %s }" % "; ".join(dq(n) for n in refl))
        out.extend(node(n, "    ") for n in members if n not in refl)
        out.append("  }")
        placed.update(members)
    for s in analysis["sessions"]:
        for end in (s["a"], s["b"]):
            if end not in placed:  # a peer outside the plan: an address only
                placed.add(end)
                out.append("  %s %s;" % (dq(end), _attrs(
                    id=dq(dom_id("peer", end)), label=label(end, "not in the plan"),
                    **{"class": dq("peer unknown")}, style=dq("dashed,rounded"), fillcolor=dq("#ffffff"),
                    tooltip=dq("%s: an address no host of the plan has" % end))))
    for s in analysis["sessions"]:
        # the reflector end first: Graphviz ranks an edge's first node above its second
        tail, head = s["a"], s["b"]
        if (hosts.get(head) or {}).get("role") == "reflector" and (hosts.get(tail) or {}).get("role") != "reflector":
            tail, head = head, tail
        ct = COLOURS[s["ends"][tail]["state"]] if tail in s["ends"] else COLOURS["missing"]
        ch = COLOURS[s["ends"][head]["state"]] if head in s["ends"] else COLOURS["missing"]
        colour = ct if ct == ch else "%s;0.5:%s" % (ct, ch)
        kind = s.get("kind") or ""
        out.append("  %s -- %s %s;" % (dq(tail), dq(head), _attrs(
            id=dq(session_dom_id(s)),
            **{"class": dq("session %s state-%s %s%s" % (
                "up" if s["up"] else "down", s["state"], "planned" if s["planned"] else "unplanned",
                (" kind-%s" % kind) if _SAFE_ID.match(kind) else ""))},
            color=dq(colour), style="solid" if s["planned"] else "dashed", tooltip=dq(session_title(s)),
            constraint="false" if kind == "ebgp" else "true")))
    out.append("}")
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:1.5em;color:#263238}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
.summary{font-size:1.05em} .summary.ok{color:#2e7d32} .summary.problem{color:#c62828;font-weight:bold}
.legend span{display:inline-block;margin-right:1.2em} .legend i{display:inline-block;width:2em;height:.35em;
vertical-align:middle;margin-right:.4em}
figure{margin:0;overflow:auto;border:1px solid #cfd8dc;padding:.5em} figure svg{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:.9em} th,td{border:1px solid #cfd8dc;padding:.25em .6em;text-align:left}
th{background:#eceff1} tr.problem td{background:#ffebee} td.num{text-align:right}
""".strip()


def _e(value):
    return html.escape("" if value is None else str(value), quote=True)


def _svg_body(svg):
    if not isinstance(svg, str) or "<svg" not in svg:
        raise AnsibleFilterError("netfleet.calico.topology_html: the second argument is not an SVG document "
                                 "(the output of dot -Tsvg)")
    return svg[svg.index("<svg"):].strip()


def render_html(model, svg, title="netfleet.calico fabric", generated=None):
    """A self-contained page: the SVG inlined, the summary, a host table and the sessions that are not up."""
    hosts = model["hosts"]
    ok = model["converged"]
    rows = []
    for name, h in hosts.items():
        missing = ", ".join(h["missing_blocks"]) or "-"
        blocks = ", ".join((h.get("blocks") or [h["block"] or "-"]) + (h.get("blocks_v6") or []))
        rows.append(
            '<tr id="%s" class="host-row %s" data-host="%s"><td class="host">%s</td><td class="rack">%s</td>'
            '<td class="as num">%s</td><td class="block">%s</td><td class="sessions num">%d/%d</td>'
            '<td class="missing">%s</td><td class="problems">%s</td></tr>' % (
                _e(dom_id("row", name)), "problem" if h["problems"] else "ok", _e(name), _e(name), _e(h["rack"] or "-"),
                _e(h["as_number"] if h["as_number"] is not None else "-"), _e(blocks), h["sessions_up"],
                h["sessions_total"], _e(missing),
                _e("; ".join(p.split(": ", 1)[1] if p.startswith(name + ": ") else p for p in h["problems"]) or "-")))
    down = [s for s in model["sessions"] if not s["up"] or not s["planned"]]
    srows = ['<tr id="%s" class="session-row state-%s"><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>' % (
        _e(dom_id("row-session", s["id"])), _e(s["state"]), _e(s["a"]), _e(s["b"]),
        _e(s["state"] + ("" if s["planned"] else " (not in the plan)")), _e(session_title(s))) for s in down]
    legend = "".join('<span class="legend-%s"><i style="background:%s"></i>%s</span>' % (k, v, _e(text))
                     for k, v, text in (
        ("established", COLOURS["established"], "Established"),
        ("connecting", COLOURS["connecting"], "connecting (Connect, Active, OpenSent, OpenConfirm)"),
        ("down", COLOURS["down"], "down (Idle, failed)"),
        ("missing", COLOURS["missing"], "missing end (no such session, BIRD not running)")))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>%s</title><style>%s</style></head><body>' % (
            _e(title), _CSS),
        "<h1>%s</h1>" % _e(title),
        '<p id="summary" class="summary %s">%s: %s</p>' % (
            "ok" if ok else "problem", "converged" if ok else "NOT converged", _e(model["summary"])),
        '<p class="legend">%s Each half of a session line is the state its end\'s BIRD reports; '
        "hover for both ends.</p>" % legend,
        '<figure id="picture">%s</figure>' % _svg_body(svg),
        "<h2>Hosts</h2>",
        '<table id="hosts"><thead><tr><th>host</th><th>rack</th><th>AS</th><th>block</th><th>sessions up/total</th>'
        "<th>missing blocks</th><th>problems</th></tr></thead><tbody>",
        *rows,
        "</tbody></table>",
        "<h2>Sessions not Established (%d of %d)</h2>" % (len(down), len(model["sessions"])),
        '<table id="sessions-down"><thead><tr><th>end</th><th>end</th><th>state</th><th>detail</th></tr></thead>'
        "<tbody>",
        *srows,
        "</tbody></table>",
    ]
    if generated:
        parts.append('<p class="generated">generated %s</p>' % _e(generated))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
