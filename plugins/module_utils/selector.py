# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Label selectors (a small subset of Calico's), parsed into a tree and never evaluated as code.

Used by the controller-side policy planner and, on the hosts, by the CNI plugin, which resolves
the policies of a container it adds (standard library only)::

    app == 'web'    role != 'db'    has(app)    !has(app)    all()    a == 'x' && b == 'y'
    a == 'x' || b == 'y'    (parentheses)    tier in {'web', 'api'}    tier not in {'db'}

``k != 'v'`` and ``k not in {...}`` also match labels without the key (as in Calico).
"""

from __future__ import annotations

import re


class SelectorError(ValueError):
    pass


_TOKEN = re.compile(r"""\s*(?:
    (?P<op>==|!=|&&|\|\||[!(){},])
  | (?P<str>'[^']*'|"[^"]*")
  | (?P<word>[A-Za-z0-9_./-]+)
  )""", re.X)


def _tokenize(text):
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SelectorError(f'unexpected {text[pos:].strip()[:10]!r} at column {pos + 1}')
        kind = m.lastgroup
        value = m.group(kind)
        tokens.append((kind, value[1:-1] if kind == 'str' else value, m.start(kind) + 1))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent: or := and ('||' and)*; and := unary ('&&' unary)*;
    unary := '!' unary | '(' or ')' | all() | has(k) | k ==|!= 'v' | k [not] in {'v', ...}."""

    def __init__(self, text):
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, offset=0):
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else (None, None, None)

    def take(self, kind=None, value=None, what=None):
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            where = f'at column {tok[2]}' if tok[0] else 'at the end'
            raise SelectorError(f"expected {what or value or kind} {where}")
        self.i += 1
        return tok

    def parse(self):
        if not self.tokens:
            raise SelectorError('is empty')
        node = self.parse_or()
        if self.peek()[0] is not None:
            raise SelectorError(f'unexpected {self.peek()[1]!r} at column {self.peek()[2]}')
        return node

    def parse_or(self):
        nodes = [self.parse_and()]
        while self.peek()[:2] == ('op', '||'):
            self.i += 1
            nodes.append(self.parse_and())
        return nodes[0] if len(nodes) == 1 else ('or', nodes)

    def parse_and(self):
        nodes = [self.parse_unary()]
        while self.peek()[:2] == ('op', '&&'):
            self.i += 1
            nodes.append(self.parse_unary())
        return nodes[0] if len(nodes) == 1 else ('and', nodes)

    def parse_unary(self):
        kind, value, _col = self.peek()
        if (kind, value) == ('op', '!'):
            self.i += 1
            return ('not', self.parse_unary())
        if (kind, value) == ('op', '('):
            self.i += 1
            node = self.parse_or()
            self.take('op', ')')
            return node
        if kind != 'word':
            raise SelectorError(f"expected a label, has(...) or all() at column {_col}" if kind
                                else 'expected a label, has(...) or all() at the end')
        self.i += 1
        if value in ('all', 'has') and self.peek()[:2] == ('op', '('):
            self.i += 1
            if value == 'all':
                self.take('op', ')')
                return ('all',)
            key = self.take('word', what='a label name')[1]
            self.take('op', ')')
            return ('has', key)
        nxt = self.peek()
        if nxt[0] == 'op' and nxt[1] in ('==', '!='):
            self.i += 1
            literal = self.take('str', what="a quoted value like 'web'")[1]
            return ('eq' if nxt[1] == '==' else 'ne', value, literal)
        negate = False
        if nxt[:2] == ('word', 'not'):
            self.i += 1
            negate = True
            nxt = self.peek()
        if nxt[:2] == ('word', 'in'):
            self.i += 1
            self.take('op', '{')
            values = []
            while True:
                values.append(self.take('str', what="a quoted value like 'web'")[1])
                if self.peek()[:2] == ('op', ','):
                    self.i += 1
                    continue
                self.take('op', '}')
                break
            return ('notin' if negate else 'in', value, tuple(values))
        where = f'at column {nxt[2]}' if nxt[0] else 'at the end'
        raise SelectorError(f"expected == or != after label '{value}' {where}")


def parse_selector(text):
    """Parse a selector into a small tree; raises SelectorError (message without the selector)."""
    if not isinstance(text, str):
        raise SelectorError('is not a string')
    return _Parser(text).parse()


def match_selector(tree, labels):
    kind = tree[0]
    if kind == 'all':
        return True
    if kind == 'has':
        return tree[1] in labels
    if kind == 'eq':
        return tree[1] in labels and str(labels[tree[1]]) == tree[2]
    if kind == 'ne':
        return not (tree[1] in labels and str(labels[tree[1]]) == tree[2])
    if kind == 'in':
        return tree[1] in labels and str(labels[tree[1]]) in tree[2]
    if kind == 'notin':
        return not (tree[1] in labels and str(labels[tree[1]]) in tree[2])
    if kind == 'not':
        return not match_selector(tree[1], labels)
    if kind == 'and':
        return all(match_selector(t, labels) for t in tree[1])
    if kind == 'or':
        return any(match_selector(t, labels) for t in tree[1])
    raise SelectorError(f'unknown node {kind}')  # pragma: no cover


def canonical(tree):
    """A stable text for a parsed selector (same meaning, same text): names an ipset per selector."""
    kind = tree[0]
    if kind == 'all':
        return 'all()'
    if kind == 'has':
        return 'has(%s)' % tree[1]
    if kind in ('eq', 'ne'):
        return "%s %s %s" % (tree[1], '==' if kind == 'eq' else '!=', _quote(tree[2]))
    if kind in ('in', 'notin'):
        return "%s %s {%s}" % (tree[1], 'in' if kind == 'in' else 'not in',
                               ', '.join(_quote(v) for v in sorted(tree[2])))
    if kind == 'not':
        return '!(%s)' % canonical(tree[1])
    joiner = ' && ' if kind == 'and' else ' || '
    return '(' + joiner.join(canonical(t) for t in tree[1]) + ')'


def _quote(value):
    """'value', or "value" when it holds a single quote (the tokenizer allows no escapes, so never both)."""
    return '"%s"' % value if "'" in value else "'%s'" % value
