"""The design card's rooms and the one-way flow of imports between them."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("plumbing", "preprocessing", "models", "training", "kernels", "submission")
#: What each room may import from the others: training and kernels -> models (the model contract) ->
#: preprocessing -> plumbing (what every command shares); kernels -> submission (the report reuses the
#: scorer's labels, metrics and plots); the kernel never imports training; submission imports nothing.
ALLOWED = {
    "plumbing": set(),
    "preprocessing": {"plumbing"},
    "models": {"plumbing", "preprocessing"},
    "training": {"plumbing", "models", "preprocessing"},
    "kernels": {"plumbing", "models", "preprocessing", "submission"},
    "submission": set(),
}


def imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        rooms.update(n.split(".")[0] for n in names if n.split(".")[0] in ROOMS)
    return rooms


def test_top_level_is_the_design_cards():
    for name in ("README.md", "requirements.txt", *ROOMS, "weights", "tests", ".ci/run"):
        assert (REPO / name).exists(), name


@pytest.mark.parametrize("room", ROOMS)
def test_imports_flow_one_way(room):
    for path in (REPO / room).rglob("*.py"):
        forbidden = imported_rooms(path) - ALLOWED[room] - {room}
        assert not forbidden, f"{path.relative_to(REPO)} imports {sorted(forbidden)}"


def test_the_import_checker_sees_imports():
    assert imported_rooms(REPO / "tests" / "test_faces.py") >= {"preprocessing"}


def sibling_imports(path: Path) -> set[str]:
    """The modules of its own room that ``path`` imports, anywhere in it (inside functions too):
    ``from .x import``, ``from . import x``, ``from room.x import``, ``import room.x``."""
    room, found = path.parent.name, set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [f"{room}.{node.module}"] if node.module else [f"{room}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != room else [f"{room}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n.split(".")[1] for n in names if n.split(".")[0] == room and n.count(".") >= 1)
    return found & {p.stem for p in path.parent.glob("*.py")} - {path.stem}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle of ``graph`` (module -> the modules it imports), each once, from its smallest name."""
    found = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == path[0]:
                found.append(path)
            elif nxt > path[0] and nxt not in path:
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return found


@pytest.mark.parametrize("room", ROOMS)
def test_no_import_cycle_inside_a_room(room):
    """No module of a room imports, through its siblings, back to itself; an import placed inside a
    function counts (it only hides the cycle until the function runs)."""
    graph = {path.stem: sibling_imports(path) for path in (REPO / room).glob("*.py")}
    assert not cycles(graph), f"{room}: import cycles {[' -> '.join(c + c[:1]) for c in cycles(graph)]}"


def test_the_cycle_checker_sees_cycles(tmp_path):
    room = tmp_path / "room"
    room.mkdir()
    (room / "a.py").write_text("def f():\n    from .b import g\n")
    (room / "b.py").write_text("import room.c\n")
    (room / "c.py").write_text("from room import a\n")
    graph = {path.stem: sibling_imports(path) for path in room.glob("*.py")}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_switches_matplotlibs_backend():
    """Importing every room leaves a notebook's matplotlib backend alone (figures are built without pyplot)."""
    import subprocess
    import sys
    code = ("import matplotlib; matplotlib.use('svg'); import importlib, pathlib\n"
            f"for path in sorted(pathlib.Path({str(REPO)!r}).glob('*/*.py')):\n"
            f"    if path.parent.name in {ROOMS!r} and path.stem != '__main__':\n"
            "        importlib.import_module(f'{path.parent.name}.{path.stem}')\n"
            "print(matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**__import__("os").environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "svg"


def test_a_default_is_declared_once():
    """Changing ``preprocessing.video.FRAMES`` (one line) changes every command's frame count, and the
    detector flags of every command read ``FaceDetector``'s defaults."""
    import subprocess
    import sys
    code = ("import preprocessing.video as video; video.FRAMES = 7\n"
            "from kernels.predict import build_parser as predict\n"
            "from kernels.scoring import Settings\n"
            "from preprocessing.prepare import PrepareConfig\n"
            "from preprocessing.extract_faces import build_parser as extract\n"
            "print(Settings().frames, predict().parse_args([]).frames, extract().parse_args([]).frames, "
            "PrepareConfig('dfdc', 'r', 'o').frames)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**__import__("os").environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["7"] * 4

    from kernels.predict import build_parser
    from kernels.scoring import Settings
    from preprocessing.detect import DEFAULTS
    from preprocessing.prepare import PrepareConfig
    args, settings = build_parser().parse_args([]), Settings()
    assert {k: getattr(args, k) for k in ("min_score", "min_size", "batch_size")} == \
        {k: DEFAULTS[k] for k in ("min_score", "min_size", "batch_size")}
    config = PrepareConfig("dfdc", "r", "o")
    assert (config.min_score, config.min_size) == (DEFAULTS["min_score"], DEFAULTS["min_size"])
    for name in ("frames", "min_frames", "detect_every", "strategy", "prior", "eps", "workers", "video_timeout"):
        assert getattr(args, name) == getattr(settings, name), name


def commands() -> list[str]:
    """Every ``python -m`` command of the rooms: the modules that define ``main``."""
    return sorted(f"{path.parent.name}.{path.stem}" for room in ROOMS for path in (REPO / room).glob("*.py")
                  if "\ndef main(" in path.read_text())


@pytest.mark.parametrize("module", commands())
def test_every_command_explains_itself(module, capsys):
    """``python -m MODULE --help`` prints a usage naming the command and exits 0 (a stray ``%`` in a
    help string, say, would crash it)."""
    import importlib
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main(["--help"])
    assert stop.value.code == 0
    assert f"usage: python -m {module}" in capsys.readouterr().out


def shown_commands() -> list[tuple[str, str, list[str]]]:
    """``(page, module, flags)`` for every ``python -m MODULE ...`` line (or ``torchrun ... -m MODULE``) of
    the README and ``docs/``, continuation lines joined."""
    import re
    shown = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            for match in re.finditer(r"(?:python|torchrun)[^`|]*?-m ([a-z_]+\.[a-z_.]+)([^`|;&#]*)", line):
                shown.append((page.name, match.group(1), re.findall(r"(?<![\w-])--[a-z][a-z-]*", match.group(2))))
    return shown


@pytest.mark.parametrize("page, module, flags", shown_commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_command_the_docs_show_exists_with_its_flags(page, module, flags, capsys):
    """Each command a page shows is a real command, and every flag it shows is one of its flags."""
    import importlib
    assert module in commands() or module.startswith("tests.benchmarks."), f"{page}: {module} is not a command"
    with pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    usage = capsys.readouterr().out
    unknown = [flag for flag in flags if flag not in usage]
    assert not unknown, f"{page}: python -m {module} has no {unknown}"
