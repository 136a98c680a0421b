"""The prompt grid: stable ids, fixed order, topic coverage, format/audience rules, web seeding."""

import itertools
import json

import pytest

from primer.errors import PrimerError
from primer.synth import grid
from primer.synth.topics import shipped

TOPICS = [grid.Topic("photosynthesis", "biology", "plants"), grid.Topic("the French Revolution", "history", "revolutions"),
          grid.Topic("binary search", "programming", "algorithms")]


def test_ids_are_stable_and_unique():
    a = [p.id for p in grid.plan(TOPICS, seed=3)]
    b = [p.id for p in grid.plan(TOPICS, seed=3)]
    assert a == b and len(set(a)) == len(a)
    assert [p.id for p in grid.plan(TOPICS, seed=4)] != a  # the seed changes the order


def test_grid_is_exhaustive_and_respects_rules():
    specs = list(grid.plan(TOPICS))
    by_topic = {t.name: [s for s in specs if s.topic == t] for t in TOPICS}
    n_styles = len(grid.STYLES["tone"]) * len(grid.STYLES["angle"])
    assert len(by_topic["the French Revolution"]) == 3 * 5 * n_styles  # no word problems or code for history
    assert len(by_topic["binary search"]) == (4 * 5 + 4) * n_styles  # code, but not for young children
    assert not any(s.format == "code" and s.audience == "young_children" for s in specs)
    assert len({(s.topic, s.format, s.audience, s.style) for s in specs}) == len(specs)


def test_first_prompts_cover_distinct_topics():
    topics = shipped()
    first = list(itertools.islice(grid.plan(topics), 300))
    assert len({p.topic for p in first}) == 300
    assert len({p.format for p in first}) == 5 and len({p.audience for p in first}) == 5


def test_prompts_are_short_and_name_topic_and_audience():
    for p in itertools.islice(grid.plan(shipped()), 200):
        assert len(p.text.split()) < 80
        assert p.topic.name in p.text
        assert grid.AUDIENCES[p.audience] in p.text


def test_filters_and_unknown_names():
    specs = list(grid.plan(TOPICS, formats=["story"], audiences=["college"]))
    assert {(s.format, s.audience) for s in specs} == {("story", "college")}
    with pytest.raises(PrimerError, match="unknown format"):
        list(grid.plan(TOPICS, formats=["poem"]))
    with pytest.raises(PrimerError, match="nothing to generate"):
        list(grid.plan([]))


def test_web_extract_seeding(tmp_path):
    corpus = tmp_path / "web.jsonl"
    docs = ["Tides are caused by the Moon's gravity pulling on the oceans. " * 6, "short", "Volcanoes erupt when magma rises. " * 10]
    corpus.write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n")
    extracts = grid.read_extracts(corpus, max_chars=200)
    assert len(extracts) == 2 and all(len(e.text) <= 200 for e in extracts)
    specs = list(itertools.islice(grid.plan(extracts=extracts), 4))
    assert all(s.topic is None and s.extract is not None for s in specs)
    assert all(s.text.startswith("Here is an extract from a web page") and grid.SEEDED_TOPIC in s.text for s in specs)
    assert len({s.id for s in specs}) == 4
