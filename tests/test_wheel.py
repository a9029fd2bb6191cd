"""The built wheel, installed without ``-e`` into a fresh venv, runs the README's configs from a
folder that is not the source tree (the configs ship inside the package)."""

import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_configs() -> list[str]:
    """The config names the README's commands use (``run NAME``, ``--config NAME``, ...)."""
    text = (ROOT / "README.md").read_text()
    pattern = r"robopref (?:run|bench|config show|lm --config|grape --config)\s+([\w./-]+)"
    return sorted(set(re.findall(pattern, text)))


def _run(args: list, cwd: Path, env: dict, timeout: float = 600) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_runs_the_readme_configs_from_another_folder(tmp_path):
    names = sorted({*_readme_configs(), "pearl/demo"})  # pearl/demo: `robopref demo`
    assert {"pearl/button-press-to-button-press-wall", "rapl/tiny", "lm/tiny"} <= set(names)

    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "robopref", src / "robopref", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", src, "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels],
         tmp_path, env)  # fmt: skip
    (wheel,) = wheels.glob("robopref-*.whl")

    # a fresh venv that sees the dev venv's packages (a plain .pth line: the dev venv's own
    # editable robopref, installed through a .pth hook there, stays invisible)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   tmp_path, env).strip()  # fmt: skip
    dev_site = [sysconfig.get_path("purelib"), *site.getsitepackages()]
    Path(purelib, "dev-venv.pth").write_text("\n".join(dict.fromkeys(dev_site)) + "\n")
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], tmp_path, env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    robopref = venv / "bin" / "robopref"
    where = _run([python, "-c", "import robopref; print(robopref.__file__)"], elsewhere, env)
    assert where.strip().startswith(str(venv)), where

    assert _run([robopref, "--version"], elsewhere, env).startswith("robopref ")
    assert "method: pearl" in _run([robopref, "config", "show", "pearl/base"], elsewhere, env)
    check = (
        "import sys\n"
        "from robopref.config import resolve_config_path\n"
        "from robopref.methods.run import load_run_config\n"
        "from robopref.bench import load_suite\n"
        "for name in sys.argv[1:]:\n"
        "    path = resolve_config_path(name)\n"
        "    load_suite(path) if name.startswith('bench/') else load_run_config(str(path), [])\n"
        "    print(path)\n"
    )
    resolved = _run([python, "-c", check, *names], elsewhere, env).split()
    assert len(resolved) == len(names) and all(p.startswith(str(venv)) for p in resolved)

    tiny = [
        "tasks=[reach-v3]",
        "expert_episodes=1",
        "noisy_episodes=0",
        "goal_mismatch_episodes=0",
        "random_episodes=1",
        "other_task_episodes=0",
        "max_episode_steps=20",
    ]
    _run([robopref, "collect", "--out", "d.h5", *tiny], elsewhere, env)
    assert (elsewhere / "d.h5").is_file()
    # the lm config reads data files shipped beside it
    out = elsewhere / "lm-run"
    _run([robopref, "run", "lm/tiny", "epochs=1", "progress=false", "--out", out], elsewhere, env)
    assert (out / "results.json").is_file()
