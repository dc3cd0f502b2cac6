"""The README's script example runs as printed (with fewer steps)."""

from pathlib import Path

from conftest import REPO, write_raindrop_layout


def readme_block(heading, language="python"):
    text = (REPO / "README.md").read_text()
    assert heading in text, heading
    return text.split(heading, 1)[1].split(f"```{language}", 1)[1].split("```", 1)[0]


def test_in_your_own_script_example_runs(tmp_path, monkeypatch):
    code = readme_block("### In your own script")
    assert "steps_per_epoch=100, epochs=10" in code
    code = code.replace("steps_per_epoch=100, epochs=10", "steps_per_epoch=2, epochs=1")
    monkeypatch.chdir(tmp_path)
    write_raindrop_layout(Path("Raindrop") / "test_a", count=2)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "history.csv").read_text().count("\n") == 2  # header + one epoch
    assert (tmp_path / "generator.keras").stat().st_size > 0
