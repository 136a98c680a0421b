"""Open-book evaluation plumbing on a tiny SQuAD / TriviaQA slice: retrieved passages reach the prompt,
recall@k is scored against the gold paragraph (or the answers), and samples cite their passages.

The model is `OracleReaderFake`, a fake on purpose: the test is about primer's retrieval and scoring
logic, so the "model" answers correctly exactly when the gold answer is in its prompt's Background.
"""

import json
import re

import pytest

from primer.errors import PrimerError
from primer.eval.runner import EvalConfig, evaluate
from primer.index.bm25 import IndexConfig, build_index

pytest.importorskip("bm25s")

ARTICLES = {
    "Kyoto": [("Kyoto was the capital of Japan for more than one thousand years, until 1869.",
               "Until what year was Kyoto the capital?", "1869"),
              ("The city has about 1.5 million inhabitants and many temples.", "How many people live in the city?",
               "1.5 million")],
    "Volcano": [("A volcano erupts when magma rises through the crust of the planet.",
                 "What rises through the crust when a volcano erupts?", "magma"),
                ("Mount Etna on Sicily is the most active volcano in Europe.", "Where is Mount Etna?", "Sicily")],
}


class OracleReaderFake:
    name, fingerprint = "oracle-reader-fake", "fake0001"

    def __init__(self, answers: dict[str, str]):
        self.answers, self.prompts = answers, []

    def generate(self, prompts, stop=(), max_tokens=32, temperature=0.0, seed=0):
        out = []
        for p in prompts:
            self.prompts.append(p)
            q = re.search(r"Question: (.*?)\??\n", p).group(1)
            gold = next(a for k, a in self.answers.items() if k.rstrip("?") == q.rstrip("?"))
            context = p[: p.rfind("Question:")]
            out.append(" " + gold if gold in context else " no idea")
        return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    (d / "squad").mkdir()
    squad = {"version": "1.1", "data": [
        {"title": t, "paragraphs": [{"context": c, "qas": [{"id": f"{t}{i}", "question": q,
                                                            "answers": [{"text": a, "answer_start": c.index(a)}]}]}
                                    for i, (c, q, a) in enumerate(paras)]}
        for t, paras in ARTICLES.items()]}
    (d / "squad" / "dev-v1.1.json").write_text(json.dumps(squad))
    (d / "triviaqa").mkdir()
    (d / "triviaqa" / "triviaqa_sm_sub.jsonl").write_text(
        json.dumps({"context": "Question: Which island is Mount Etna on?\nAnswer:", "answer": "Sicily",
                    "aliases": ["Sicily", "Sicilia"]}) + "\n"
        + json.dumps({"context": "Question: Who painted the Mona Lisa?\nAnswer:", "answer": "Leonardo da Vinci",
                      "aliases": ["Leonardo da Vinci", "Leonardo"]}) + "\n")
    build_index([d / "squad" / "dev-v1.1.json"], d / "idx", IndexConfig())
    return d


def answers():
    out = {q: a for paras in ARTICLES.values() for _, q, a in paras}
    out.update({"Which island is Mount Etna on?": "Sicily", "Who painted the Mona Lisa?": "Leonardo da Vinci"})
    return out


def test_closed_open_and_oracle_side_by_side(data):
    lm = OracleReaderFake(answers())
    cfg = EvalConfig(tasks=["squad_closedbook", "squad_openbook", "squad"], data_dir=data, index=data / "idx",
                     passages=1, cache="none", log_samples=True)
    res = evaluate(lm, cfg, progress=False)
    t = res.tasks
    assert t["squad_closedbook"].metrics["exact_match"] == 0.0  # the question alone never holds the answer
    assert t["squad"].metrics["exact_match"] == 1.0  # the gold paragraph always does
    open_ = t["squad_openbook"].metrics
    # with one passage in the prompt, the reader is right exactly when retrieval put the gold paragraph first
    assert open_["exact_match"] == open_["recall@1"] == 1.0
    assert open_["recall@5"] == open_["recall@20"] == 1.0
    rec = res.samples["squad_openbook"][0]
    [p] = rec["passages"]
    assert p["rank"] == 1 and p["doc_id"] == "Kyoto/0" and p["start"] == 0 and p["score"] > 0
    prompt = rec["requests"][0][0]
    assert prompt.startswith("Background:\n[1] Kyoto\nKyoto was the capital") and prompt.endswith("\n\nAnswer:")
    closed = res.samples["squad_closedbook"][0]["requests"][0][0]
    assert prompt.endswith(closed) and "passages" not in res.samples["squad_closedbook"][0]


def test_triviaqa_openbook_scores_answer_recall(data):
    lm = OracleReaderFake(answers())
    res = evaluate(lm, EvalConfig(tasks=["triviaqa", "triviaqa_openbook"], data_dir=data, index=data / "idx",
                                  passages=2, cache="none"), progress=False)
    m = res.tasks["triviaqa_openbook"].metrics
    # Etna's paragraph names Sicily; nothing in the index names Leonardo
    assert m["answer_recall@1"] == m["answer_recall@20"] == 0.5
    assert m["exact_match"] == 0.5 and res.tasks["triviaqa"].metrics["exact_match"] == 0.0


def test_open_book_without_an_index_says_how_to_make_one(data):
    with pytest.raises(PrimerError, match="primer index build"):
        evaluate(OracleReaderFake(answers()), EvalConfig(tasks=["squad_openbook"], data_dir=data, cache="none"),
                 progress=False)


def test_sample_is_seeded_and_in_file_order(data):
    lm = OracleReaderFake(answers())
    cfg = EvalConfig(tasks=["squad"], data_dir=data, sample=2, seed=3, cache="none", log_samples=True)
    first = [r["requests"][0][0] for r in evaluate(lm, cfg, progress=False).samples["squad"]]
    again = [r["requests"][0][0] for r in evaluate(lm, cfg, progress=False).samples["squad"]]
    assert first == again and len(first) == 2
