"""The template sandbox's limits: hostile templates stop at once with bounded memory; real ones work."""
from __future__ import annotations

import re
import resource
import threading

import pytest

from musicbuild.render import Renderer, RenderError

HOSTILE = {
    "{{ 'a' * 10**9 }}": "repeating a value would make 1,000,000,000",
    "{{ (3**1000000000) % 7 }}": r"3 \*\* 1000000000 would have more than 10,000 bits",
    "{{ 10**5000 }}": "would have more than 10,000 bits",
    "{{ 'x'|center(10**9) }}": "a width or count",
    "{{ 'x'.ljust(10**9) }}": r"a number over 1,000,000 given to ljust\(\)",
    "{{ (1).to_bytes(1000000000, 'big') }}": r"to_bytes\(\)",
    "{{ '%0999999999d' % 1 }}": "a format width of 999,999,999",
    "{{ '%0*d' % (999999999, 1) }}": "given to a format",
    "{{ '{:>999999999}'.format(1) }}": "a format width",
    "{{ '{:{}}'.format(1, 999999999) }}": r"given to format\(\)",
    "{{ '%0999999999d'|format(1) }}": "a format width",
    "{{ range(100000)|join('x' * 100000) }}": "joining would make",
    "{{ 'x'.join(range(100000)|map('string')|map('center', 100000)) }}": "one render made more than",
    "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}": "joining with ~",
    "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}": "joining two values",
    "{{ ['x' * 1000000] * 1000 }}": "repeating a value",
    "{{ [('x' * 999999), ('x' * 999999)] }}": "printing a value",
    "{{ [('x' * 999999), ('x' * 999999)]|upper }}": "the upper filter",
    "{{ 'a b c'|wordwrap(1, wrapstring='x' * 1000000) }}": "wordwrap would make",
    "{{ 'a\nb'|indent(1000000) }}": "indent would make",
    "{{ range(1000)|list|tojson(1000000) }}": "tojson indent",
    "{{ [1]|batch(1000000000, 0)|list }}": "a width or count",
    "{{ range(10)|slice(1000000000)|list }}": "a width or count",
    "{{ ('x\t' * 1000).expandtabs(100000) }}": "expandtabs would make",
    "{{ 'x'.translate({120: 'y'}) }}": "'translate' is not available",
    "{{ ([[1] * 1000] * 1000)|sum(start=[]) }}": "repeating a value",
    "{% for i in range(100000) %}{% set x = 'y' * 1000000 %}{% endfor %}": "one render made more than",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}": "the output passed 1,000,000",
    "{% filter upper %}{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}{% endfilter %}":
        "one render made more than|took longer than 1 s",  # whichever comes first on this machine
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}": "took longer than 1 s",
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("source", list(HOSTILE))
def test_a_hostile_template_stops_with_a_message_and_bounded_memory(source: str) -> None:
    before = _peak_mb()
    with pytest.raises(RenderError) as err:
        Renderer().render(source, {})
    assert re.search(HOSTILE[source], err.value.args[0]), err.value.args[0]
    assert err.value.args[0].startswith("template stopped: ")
    assert _peak_mb() - before < 200


def test_ordinary_templates_render_as_before() -> None:
    r = Renderer()
    ctx = {"game": "Skyforge", "mood": "calm", "n": 3, "tags": ["harp", "strings"]}
    assert r.render("{{ game|upper }} {{ mood|title }} {{ '%03d' % n }} {{ '{:>4}'.format(n) }}", ctx) == "SKYFORGE Calm 003    3"
    assert r.render("{{ tags|join(', ') }} {{ 'a-b'|replace('-', ' ') }} {{ ' '.join(tags) }}", ctx) == "harp, strings a b harp strings"
    assert r.render("{% for t in tags %}{{ loop.index }}:{{ t }} {% endfor %}", ctx) == "1:harp 2:strings "
    assert r.render("{{ 2 ** 64 }} {{ n * 1000 }} {{ [1, 2] + [3] }} {{ 'ab' ~ 'cd' }}", ctx) == "18446744073709551616 3000 [1, 2, 3] abcd"
    assert r.render("{% set x %}{{ game }}!{% endset %}{{ x * 2 }}", ctx) == "Skyforge!Skyforge!"
    assert r.render("{{ range(3)|list|tojson }} {{ 'x'|center(5) }}|", ctx) == "[0, 1, 2]   x  |"


def test_a_template_of_a_megabyte_is_still_fine() -> None:
    text = Renderer().render("{{ 'la ' * 300000 }}", {})
    assert len(text) == 900_000


def test_lipsum_and_urlize_are_gone() -> None:
    with pytest.raises(RenderError, match="undefined variable 'lipsum'"):
        Renderer().render("{{ lipsum(100000) }}", {})
    with pytest.raises(RenderError, match="No filter named 'urlize'"):
        Renderer().render("{{ 'x'|urlize }}", {})


def test_the_deadline_is_skipped_off_the_main_thread_but_the_size_limits_hold() -> None:
    errors: list[str] = []

    def run() -> None:
        try:
            Renderer().render("{{ 'a' * 10**9 }}", {})
        except RenderError as exc:
            errors.append(exc.args[0])

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)
    assert errors and "repeating a value" in errors[0]
