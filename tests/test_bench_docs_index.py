"""bench.common.with_index: docs/benchmarks.md's contents list, rebuilt whenever a section is written."""

from __future__ import annotations

from bench.common import with_index

DOC = """# Benchmarks

Intro.

<!-- a:start -->
## Same heading

one
<!-- a:end -->

<!-- b:start -->
## Same heading

two
<!-- b:end -->
"""


def test_the_index_lists_every_section_once_in_order_with_an_anchor_each() -> None:
    text = with_index(DOC)
    assert text.index("<!-- index:start -->") < text.index("<!-- a:start -->")  # before the first section
    assert "- [Same heading](#a) (`a`)\n- [Same heading](#b) (`b`)" in text
    assert '<!-- a:start -->\n<a id="a"></a>\n\n## Same heading' in text and text.count('<a id="b"></a>') == 1
    assert with_index(text) == text  # idempotent: a rewrite adds nothing twice


def test_a_new_section_joins_the_index() -> None:
    text = with_index(DOC) + "\n<!-- c:start -->\n## Third\n<!-- c:end -->\n"
    again = with_index(text)
    assert again.count("<!-- index:start -->") == 1 and "- [Third](#c) (`c`)" in again
