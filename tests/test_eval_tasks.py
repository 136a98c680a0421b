"""Task registry, loaders and prompts (lm-eval's exact strings), decontamination texts, bad input."""

import json

import pytest

from primer.errors import PrimerError
from primer.eval.tasks import GROUPS, expand, get_task, iter_decontam_items, list_tasks

PHI_TABLE = ["winogrande", "arc_easy", "arc_challenge", "boolq", "siqa", "piqa", "hellaswag", "openbookqa",
             "squad", "mmlu", "gsm8k", "gsm8k_code", "humaneval", "mbpp", "triviaqa", "lambada", "wikitext"]


def test_registry_has_the_phi_table():
    names = list_tasks()
    for t in PHI_TABLE:
        assert t in names
    assert len(GROUPS["mmlu"]) == 57 and len(GROUPS["mmlu_cloze"]) == 57
    assert [t.name for t in expand(["piqa", "piqa", "mmlu"])][:2] == ["piqa", "mmlu_abstract_algebra"]


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(PrimerError) as e:
        get_task("hellaswagg")
    assert "unknown task 'hellaswagg'" in str(e.value) and "piqa" in str(e.value) and "mmlu" in str(e.value)


def test_missing_file_names_the_file_and_the_layout(tmp_path):
    with pytest.raises(PrimerError) as e:
        get_task("piqa").docs(tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "piqa" / "valid.jsonl") in msg and "valid-labels.txt" in msg and "goal, sol1, sol2" in msg


def test_fixture_layout_loads_and_prompts_like_lm_eval(tmp_path):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "valid.jsonl").write_text(json.dumps({"goal": "Open a jar", "sol1": "twist", "sol2": "shout"}) + "\n")
    (tmp_path / "piqa" / "valid-labels.txt").write_text("0\n")
    t = get_task("piqa")
    (d,) = t.docs(tmp_path)
    assert t.doc_to_text(d) == "Question: Open a jar\nAnswer:"
    assert t.doc_to_choice(d) == ["twist", "shout"] and t.doc_to_target(d) == 0
    # the whole item: goal + correct solution (the solved item), then the other solution
    assert list(iter_decontam_items(tmp_path, ["piqa"])) == [("piqa", "piqa", "0", ("Open a jar twist", "shout"))]
    # default set skips tasks whose files are absent
    assert list(iter_decontam_items(tmp_path)) == [("piqa", "piqa", "0", ("Open a jar twist", "shout"))]
    with pytest.raises(PrimerError):
        list(iter_decontam_items(tmp_path, ["arc_easy"], missing="error"))


def test_hellaswag_preprocessing_matches_lm_eval():
    from primer.eval.tasks.commonsense import _restore_ctx_b_capital, hellaswag_preprocess

    # the same output as lm-eval's utils.preprocess, leftover spaces included
    assert hellaswag_preprocess(" [header] How to x [title] Do it.  [step] Now ") == " How to x. Do it.  Now"
    assert _restore_ctx_b_capital("A man is sitting on a roof. he") == "A man is sitting on a roof. He"
    assert _restore_ctx_b_capital("How to buy a ring. Find one.") == "How to buy a ring. Find one."


@pytest.fixture(scope="module")
def first_docs(data_dir):
    return {n: get_task(n).docs(data_dir)[0] for n in ["arc_easy", "boolq", "winogrande", "siqa", "openbookqa",
                                                         "hellaswag", "mmlu_anatomy", "mmlu_cloze_anatomy", "lambada",
                                                         "triviaqa", "gsm8k", "mbpp"]}


def test_real_data_prompts(data_dir, first_docs):
    d = first_docs
    arc = get_task("arc_easy")
    assert arc.doc_to_text(d["arc_easy"]) == ("Question: Which statement best explains why photosynthesis is the "
                                              "foundation of most food webs?\nAnswer:")
    boolq = get_task("boolq").doc_to_text(d["boolq"])
    assert boolq.startswith("All biomass goes through") and boolq.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    wg = get_task("winogrande")
    assert wg.doc_to_choice(d["winogrande"]) == ["Sarah was a much better surgeon than Maria so Sarah",
                                                 "Sarah was a much better surgeon than Maria so Maria"]
    assert wg.doc_to_target(d["winogrande"]) == "always got the easier cases." and wg.doc_to_text(d["winogrande"]) == 1
    assert get_task("siqa").doc_to_text(d["siqa"]) == ("Q: Tracy didn't go home that evening and resisted Riley's attacks. "
                                                       "What does Tracy need to do before this?\nA:")
    assert get_task("siqa").doc_to_target(d["siqa"]) == 2
    assert get_task("hellaswag").doc_to_text(d["hellaswag"]) == "Roof shingle removal: A man is sitting on a roof. He"
    mm = get_task("mmlu_anatomy")
    assert mm.doc_to_text(d["mmlu_anatomy"]).endswith("\nD. paralysis of the facial muscles, loss of taste, lacrimation and decreased salivation.\nAnswer:")
    assert mm.description(d["mmlu_anatomy"]) == "The following are multiple choice questions (with answers) about anatomy.\n\n"
    assert get_task("mmlu_cloze_anatomy").doc_to_choice(d["mmlu_cloze_anatomy"])[0] == "paralysis of the facial muscles."
    lam = get_task("lambada")
    assert lam.doc_to_target(d["lambada"]) == " signs" and lam.doc_to_text(d["lambada"]).endswith("I don't care about")
    assert get_task("triviaqa").doc_to_text(d["triviaqa"]).endswith("vegetable??\nAnswer:")  # lm-eval's extra "?"
    assert get_task("mbpp").doc_to_text(d["mbpp"]).startswith("You are an expert Python programmer, and here is your task: ")


def test_split_sizes_match_the_standard_splits(data_dir):
    sizes = {"piqa": 1838, "hellaswag": 10042, "winogrande": 1267, "siqa": 1954, "openbookqa": 500, "arc_easy": 2376,
             "arc_challenge": 1172, "boolq": 3270, "lambada": 5153, "gsm8k": 1319, "humaneval": 164, "mbpp": 500,
             "squad": 10570}
    for name, n in sizes.items():
        assert len(get_task(name).docs(data_dir)) == n, name
    assert sum(len(get_task(t).docs(data_dir)) for t in GROUPS["mmlu"]) == 14042


def test_fewshot_prefixes(data_dir):
    import random

    mm = get_task("mmlu_anatomy")
    doc = mm.docs(data_dir)[0]
    pre = mm.fewshot_prefix(doc, 5, mm.fewshot_pool(data_dir), random.Random(0))
    assert pre.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert pre.count("\nAnswer: ") == 5 and pre.endswith("\n\n")
    mbpp = get_task("mbpp")
    pre = mbpp.fewshot_prefix(mbpp.docs(data_dir)[0], 3, mbpp.fewshot_pool(data_dir), random.Random(0))
    assert pre.count("[DONE]") == 3 and "similar_elements" in pre


def test_decontamination_covers_every_benchmark(data_dir):
    seen = {it.task for it in iter_decontam_items(data_dir)}
    for t in ["piqa", "hellaswag", "winogrande", "siqa", "openbookqa", "arc_easy", "arc_challenge", "boolq",
              "triviaqa", "squad", "lambada", "wikitext", "gsm8k", "humaneval", "mbpp", "mmlu_anatomy"]:
        assert t in seen, t
    assert "gsm8k_code" not in seen and "mmlu_cloze_anatomy" not in seen
