"""`primer generate` / `primer chat` on the bundled model: streaming output, piped chat, one-line errors."""

import io
import subprocess
import sys

from primer.cli import main


def test_help_lists_generate_and_chat():
    out = subprocess.run([sys.executable, "-m", "primer", "--help"], capture_output=True, text=True, check=True).stdout
    assert "generate" in out and "chat" in out


def test_generate_streams_a_completion(bundled_gguf, capsys):
    assert main(["generate", "The capital of France is", "--max-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "Paris" in out


def test_generate_stop_and_sampling_flags(bundled_gguf, capsys):
    args = ["generate", "Count: one, two, three,", "--max-tokens", "16", "--stop", ",",
            "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "," not in first
    assert main(args) == 0
    assert capsys.readouterr().out == first  # seeded: the same text again


def test_chat_reads_piped_turns(bundled_gguf, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the capital of France?\nAnd of Italy?\n/exit\nignored\n"))
    assert main(["chat", "--max-tokens", "32"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert "Paris" in out and "Rome" in out and len(lines) >= 2
    assert not out.startswith(">")  # no prompt marker when stdin is not a terminal


def test_errors_are_one_line_without_traceback(bundled_gguf, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    long_prompt = "word " * 9000
    for args, expect in [
        (["generate", "hi", "--model", str(tmp_path / "missing.gguf")], "model not found"),
        (["generate", "hi", "--model", str(bad)], "corrupt or truncated"),
        (["generate", long_prompt, "--max-tokens", "4"], "the model's context is 8192 tokens"),
    ]:
        r = subprocess.run([sys.executable, "-m", "primer", *args], capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert expect in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
