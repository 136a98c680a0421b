"""The shipped topic tree, topic files, and teacher expansion with near-duplicate merging."""

import json

from synth_helpers import FakeTeacher

from primer.cli import main
from primer.synth import topics as T
from primer.teachers import Completion

SUBJECTS = {"mathematics", "physics", "chemistry", "biology", "earth science", "astronomy", "history",
            "geography", "economics", "everyday reasoning", "programming", "literature", "health", "arts"}


def test_shipped_tree_is_broad_and_has_no_duplicates():
    leaves = T.shipped()
    assert len(leaves) >= 2000
    norms = [T.normalize(t.name) for t in leaves]
    assert len(set(norms)) == len(norms)
    counts = T.iter_subjects(leaves)
    assert SUBJECTS <= set(counts)
    assert all(counts[s] >= 25 for s in SUBJECTS), counts
    assert all(t.name and t.subject and t.area for t in leaves)


def test_normalize_merges_trivial_variants():
    assert T.normalize("The Water Cycles") == T.normalize("water cycle") == T.normalize("water-cycle")


def test_parse_list_cleans_teacher_answers():
    text = ("Sure! Here are some subtopics:\n1. Cell membranes\n2) **Mitochondria**: the powerhouse\n"
            "- Osmosis - water moving\n* What is a cell?\nThis line is a long sentence that explains far too much to be a name.\n")
    assert T.parse_list(text) == ["Cell membranes", "Mitochondria", "Osmosis"]


def test_deduper_drops_near_identical_topics():
    d = T.TopicDeduper()
    assert d.add("Photosynthesis in plants")
    assert not d.add("photosynthesis in plant")
    assert not d.add("Photosynthesis in Plants.")
    assert d.add("Cellular respiration")


def test_read_topics_formats(tmp_path):
    (tmp_path / "t.txt").write_text("# comment\nvolcanoes\nVolcanoes\nfractions\n")
    assert [t.name for t in T.read_topics(tmp_path / "t.txt")] == ["volcanoes", "fractions"]
    (tmp_path / "t.jsonl").write_text('{"topic": "tides", "subject": "earth science"}\n{"parent": "x", "done": true}\n')
    (t,) = T.read_topics(tmp_path / "t.jsonl")
    assert (t.name, t.subject) == ("tides", "earth science")


class ListTeacher(FakeTeacher):
    def _complete_batch(self, prompts, samplings):
        self.calls += 1
        out = []
        for p in prompts:
            topic = p.split('"')[1]
            # one duplicate of the parent, one near-duplicate pair, two real ones
            text = f"1. {topic}\n2. {topic} basics\n3. {topic} basic\n4. History of {topic}\n5. {topic} in daily life"
            out.append(Completion(text, "stop", 10, 20))
        return out


def test_expand_appends_new_topics_and_resumes(tmp_path):
    parents = [T.Topic("volcanoes", "earth science", "geology"), T.Topic("fractions", "mathematics", "arithmetic")]
    out = tmp_path / "more.jsonl"
    teacher = ListTeacher(batch_size=1)
    stats = T.expand(parents, teacher, out, per_topic=5, progress=False)
    assert stats["new"] == 6 and stats["duplicates"] == 4
    names = [t.name for t in T.read_topics(out)]
    assert "volcanoes basics" in names and "volcanoes basic" not in names and "volcanoes" not in names
    calls = teacher.calls
    again = T.expand(parents, teacher, out, per_topic=5, progress=False)
    assert again["parents_done_before"] == 2 and again["new"] == 0 and teacher.calls == calls
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["subject"] for r in recs if "topic" in r)


def test_topics_cli_counts_and_export(tmp_path, capsys):
    assert main(["topics"]) == 0
    out = capsys.readouterr().out
    assert "topics in all" in out and "mathematics" in out
    dest = tmp_path / "all.jsonl"
    assert main(["topics", "--subjects", "astronomy", "--export", str(dest)]) == 0
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert rows and all(r["subject"] == "astronomy" for r in rows)
