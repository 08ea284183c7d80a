"""pyproject.toml and environment.yml list the same dependencies; the README has two commands."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {_name(r): r for r in pip if not r.startswith("-e")}
    conda = {d.replace("pytorch-cpu", "torch") for d in env["dependencies"] if isinstance(d, str)}
    listed |= {_name(r): r for r in conda if _name(r) in ("torch", "torchvision")}  # conda-forge's CPU builds
    assert listed.keys() == wanted.keys()
    for name, req in wanted.items():
        assert listed[name].replace(" ", "") == req.replace(" ", ""), name


def test_readme_quickstart_has_exactly_two_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```(?:bash)?\n(.*?)```", text, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(commands) == 2
    assert "clipaln tour" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_the_wheel_carries_the_toy_clip(tmp_path):
    """Build the wheel, install it (not editable) into a fresh venv that borrows this one's
    dependencies, and run `clipaln eval toy --json` from outside the source tree."""
    import json
    import os
    import site
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("clipaln-*.whl"))
    assert {
        "clipaln/toyworld/weights/toy_clip.safetensors",
        "clipaln/toyworld/weights/toy_clip.json",
        *(f"clipaln/templates/{name}.html" for name in ("static_player", "gallery_player", "gallery_cell")),
    } <= set(zipfile.ZipFile(wheel).namelist())  # the toy CLIP, and the players' templates
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    venv_site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(venv_site) / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # torch & co.
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CLIPALN_DATA", "PYTHONPATH")}
    p = subprocess.run(
        [venv / "bin" / "clipaln", "eval", "toy", "--json", "--n", "24"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "HF_HUB_OFFLINE": "1"},
    )
    assert p.returncode == 0, p.stderr
    assert "RANDOMLY" not in p.stderr
    where = subprocess.run(
        [py, "-c", "import clipaln; print(clipaln.__file__)"], capture_output=True, text=True, cwd=tmp_path
    )
    assert str(venv) in where.stdout  # the installed wheel answered, not the source tree
    assert json.loads(p.stdout)["objects/clean"] >= 0.9
