"""`primer data pull/check`: HF-schema records -> the layout primer reads, for every task; checks that name each problem.

The network call (`primer.benchmarks.pull.fetch`) is not exercised here (no network); `--from` reads
the same records from `datasets.save_to_disk` copies that the tests build (tests/benchmark_fixtures.py).
"""

from __future__ import annotations

import shutil

import pytest
import torch

from benchmark_fixtures import all_splits, write_fixtures
from primer.benchmarks import check, folders_for, pull
from primer.benchmarks.sources import FOLDERS
from primer.cli import main
from primer.common.paths import benchmark_dir, embedded_dir
from primer.eval.lm import PrimerLM
from primer.eval.runner import EvalConfig, build_requests, evaluate
from primer.eval.tasks import GROUPS, expand, list_tasks
from primer.errors import PrimerError
from primer.model.transformer import ModelConfig, Transformer
from test_eval_runner import ByteTok

pytest.importorskip("datasets")

ALL_TASKS = [t for t in expand(n for n in list_tasks(include_subtasks=True) if n not in GROUPS)]


@pytest.fixture(scope="module")
def pulled(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    splits = write_fixtures(root / "hub")
    out = root / "data"
    res = pull([], out, source_dir=root / "hub", log=lambda s: None)
    return out, splits, res


def hf_docs(task, splits) -> list[dict]:
    """The task's evaluated documents as the Hub has them (what lm-eval would read)."""
    folder = FOLDERS[task.files[0].split("/")[0]]
    if task.name.startswith("mmlu"):
        return [d for d in splits[("cais/mmlu", "all", "test")] if task.name.endswith("_" + d["subject"])]
    key = {"arc_easy": "easy", "arc_challenge": "challenge", "gsm8k": "test", "gsm8k_code": "test",
           "mbpp": "test"}.get(task.name) or next(iter(folder.sources))
    src = folder.sources[key]
    return splits[(src.dataset, src.config, src.split)]


def test_pull_converts_every_task_and_the_folder_checks(pulled):
    out, splits, res = pulled
    assert res.check.ok, res.check.problems
    assert set(res.folders) == set(FOLDERS)
    assert sorted(res.check.tasks) == sorted(t.name for t in ALL_TASKS)  # every task primer evaluates
    manifest = (out / "piqa" / "MANIFEST.md").read_text()
    assert "`baber/piqa` (default config, validation split) at revision `local copy" in manifest
    assert "| `valid.jsonl` | 6 | JSON lines |" in manifest
    assert check(out).ok


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
def test_pulled_documents_give_lm_evals_prompts(pulled, task):
    """Converted, written and read back by the task's own loader, each document yields the prompt, choices,
    target and score it yields straight from the Hub record."""
    out, splits, _ = pulled
    mine, theirs = task.docs(out), hf_docs(task, splits)
    assert len(mine) == len(theirs) > 0
    cfg = EvalConfig(tasks=[task.name])
    chat = type("Chat", (), {"chat_prompt": staticmethod(lambda m: "<user>" + m[0]["content"] + "<bot>")})()
    for a, b in zip(mine, theirs):
        assert build_requests(task, a, "", cfg, chat) == build_requests(task, b, "", cfg, chat)
        assert task.decontam_text(a) == task.decontam_text(b)
        if task.score is not None and task.name not in ("humaneval", "mbpp", "gsm8k_code"):
            reply = task.target_text(b) if task.kind == "generate" else ""
            assert task.score(a, [reply]) == task.score(b, [reply])


class ChatByteTok(ByteTok):
    def apply_chat_template(self, messages, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_every_task_evaluates_on_the_pulled_folder(pulled):
    out, _, _ = pulled
    torch.manual_seed(0)
    lm = PrimerLM(Transformer(ModelConfig.from_name("debug", block_size=512)), ChatByteTok(), name="debug")
    # open-book tasks read the same files as their closed-book twins, plus a search index (tests/test_eval_openbook.py)
    names = [t.name for t in ALL_TASKS if not t.name.startswith("mmlu") and t.query is None] + [
        "mmlu_anatomy", "mmlu_cloze_virology"]
    res = evaluate(lm, EvalConfig(tasks=names, data_dir=out, limit=2, max_gen_tokens=4, cache="none"), progress=False)
    assert sorted(res.tasks) == sorted(names)
    for name, r in res.tasks.items():
        assert r.n == min(2, len(hf_docs(next(t for t in ALL_TASKS if t.name == name), all_splits()))), name
        assert r.metrics.get(r.primary) is not None, (name, r.metrics)


def test_folders_for_names_tasks_groups_and_folders():
    assert [f.name for f in folders_for(["arc_easy", "piqa", "mmlu_cloze", "gsm8k_code"])] == [
        "arc", "piqa", "mmlu", "gsm8k"]
    assert [f.name for f in folders_for(["hellaswag"])] == ["hellaswag"]
    assert len(folders_for([])) == len(FOLDERS)
    with pytest.raises(PrimerError, match="unknown task 'nope'"):
        folders_for(["nope"])


def test_check_names_each_problem(pulled, tmp_path):
    out, _, _ = pulled
    bad = tmp_path / "data"
    shutil.copytree(out, bad)
    (bad / "piqa" / "valid.jsonl").write_text((bad / "piqa" / "valid.jsonl").read_text().replace("fix", "fux", 1))
    lines = (bad / "gsm8k" / "test.jsonl").read_text().splitlines(keepends=True)
    (bad / "gsm8k" / "test.jsonl").write_text("".join(lines[:-1]))
    (bad / "boolq" / "stray.jsonl").write_text("{}\n")
    (bad / "humaneval" / "HumanEval.jsonl").unlink()
    text = (bad / "lambada" / "lambada_openai.jsonl").read_text()
    (bad / "lambada" / "lambada_openai.jsonl").write_text(text.replace('"context"', '"contxt"', 1))
    (bad / "ifeval" / "MANIFEST.md").unlink()
    res = check(bad)
    problems = "\n".join(res.problems)
    assert "piqa/valid.jsonl: sha256" in problems and "content changed" in problems
    assert "gsm8k/test.jsonl:" in problems and "bytes, MANIFEST.md says" in problems
    assert "gsm8k/test.jsonl: 2 records, MANIFEST.md says 3" in problems
    assert "boolq/stray.jsonl: not listed in MANIFEST.md" in problems
    assert "humaneval/HumanEval.jsonl: listed in MANIFEST.md but missing" in problems
    assert "lambada/lambada_openai.jsonl: record 1 lacks ['context']" in problems
    assert "task lambada: " in problems and "context" in problems
    assert "ifeval: no MANIFEST.md" in problems
    # one line each, and the CLI exits 2 naming the count
    assert len(res.problems) == len(set(res.problems))
    assert main(["data", "check", str(bad)]) == 2


def test_check_passes_on_the_shared_benchmarks(data_dir, capsys):
    assert main(["data", "check", str(data_dir)]) == 0
    assert "ok -- 20 folders" in capsys.readouterr().out


def test_embedded_slice_checks_and_is_where_embedded_points():
    assert benchmark_dir("embedded") == embedded_dir()
    res = check(embedded_dir())
    assert res.ok, res.problems
    assert sorted(res.tasks) == ["arc_easy", "hellaswag", "piqa"]


def test_embedded_slice_is_the_first_items_of_the_shared_sets(data_dir, tmp_path):
    """The package's slice is what `python -m primer.benchmarks.slice` cuts from shared/benchmarks, byte for byte."""
    from primer.benchmarks.slice import SLICES, write_slice

    fresh = write_slice(data_dir, tmp_path / "slice")
    for folder, (files, _, _) in SLICES.items():
        for rel in files + ("MANIFEST.md", "NOTICE"):
            assert (fresh / folder / rel).read_bytes() == (embedded_dir() / folder / rel).read_bytes(), rel
        for rel in files:
            assert (data_dir / folder / rel).read_bytes().startswith((fresh / folder / rel).read_bytes())
        assert (embedded_dir() / folder / "LICENSE").stat().st_size > 1000


def test_no_data_names_the_pull_command(tmp_path, monkeypatch):
    from primer.eval.tasks import get_task

    with pytest.raises(PrimerError, match=r"fetch it with: primer data pull piqa --out .*benchmarks"):
        get_task("piqa").docs(None)
    with pytest.raises(PrimerError, match=r"primer data pull arc_easy --out"):
        get_task("arc_easy").docs(tmp_path)


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PRIMER_DATA", str(tmp_path / "env"))
    assert benchmark_dir() == tmp_path / "env"
    assert benchmark_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("PRIMER_DATA")
    pulled = tmp_path / "cache" / "benchmarks" / "piqa"
    pulled.mkdir(parents=True)
    (pulled / "MANIFEST.md").write_text("# piqa\n")
    assert benchmark_dir() == tmp_path / "cache" / "benchmarks"


def test_pull_without_network_or_datasets_copy_is_one_line(tmp_path):
    with pytest.raises(PrimerError, match=r"not found: --from DIR holds datasets.save_to_disk copies"):
        pull(["piqa"], tmp_path / "out", source_dir=tmp_path / "nothing", log=lambda s: None)


def test_a_schema_change_upstream_is_named(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"goal": "g", "sol1": "a", "sol2": "b"}]).save_to_disk(
        str(tmp_path / "hub" / "baber" / "piqa" / "default" / "validation"))
    with pytest.raises(PrimerError, match=r"baber/piqa \(default, validation\): records lack \['label'\]"):
        pull(["piqa"], tmp_path / "out", source_dir=tmp_path / "hub", log=lambda s: None)
    assert not (tmp_path / "out" / "piqa").exists()


def test_a_run_with_no_data_folder_falls_back_on_the_embedded_slice(monkeypatch):
    """The lookup itself (nothing found -> the package's slice) for eval and audit; curate's decontamination
    does not use it (a few hundred items of three tasks is no decontamination)."""
    import primer.pipeline.stages as stages
    from primer.audit.run import AuditConfig
    from primer.common.paths import embedded_dir
    from primer.eval.runner import EvalConfig

    monkeypatch.setattr(stages, "benchmark_dir", lambda: None)
    assert stages._with_data_dir(EvalConfig(tasks=["piqa"])).data_dir == embedded_dir()
    assert stages._with_data_dir(AuditConfig(task="arc_easy")).data_dir == embedded_dir()
    assert stages._curate_resolve(stages._curate_cfg()()).benchmarks is None
