"""The package's layers: data flows one way, and intra-package imports sit at the top of modules."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "clipaln"
#: What nothing in data/ or toyworld/ may import (the pretraining script aside).
UPPER_FLOORS = ("clipaln.train", "clipaln.cli", "clipaln.commands", "clipaln.tracks", "clipaln.runs", "clipaln.bench")
LOWER = [p for folder in ("data", "toyworld") for p in sorted((PACKAGE / folder).glob("*.py"))]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, text: str | None = None):
    """(module imported, is at module level) for every import in a file (or in `text`, read as if it
    were that file), relative ones resolved."""
    tree = ast.parse(path.read_text() if text is None else text)
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            yield name, id(node) in top


def test_the_import_resolver_sees_upward_imports():
    probe = PACKAGE / "data" / "_probe_for_test.py"  # never written: the source is read as if it were there
    names = [n for n, _ in _imports(probe, "from ..train import loop\n\ndef f():\n    from ..tracks import gender\n")]
    assert not probe.exists()
    assert "clipaln.train.loop" in names and "clipaln.tracks.gender" in names


@pytest.mark.parametrize("path", [p for p in LOWER if p.name != "pretrain.py"], ids=lambda p: p.name)
def test_data_and_toyworld_do_not_import_the_upper_floors(path):
    upward = [n for n, _ in _imports(path) if n.startswith(UPPER_FLOORS)]
    assert not upward, f"{path.relative_to(PACKAGE)} imports {upward}"


def test_package_imports_sit_at_the_top_of_modules():
    # the pretraining script measures the model it made: the one deliberate upward reach; and the
    # command layer imports what pulls in matplotlib or nbclient only when the command that needs it runs
    allowed = {
        "toyworld/pretrain.py": ("clipaln.models", "clipaln.tracks.phenomena"),
        "commands.py": ("clipaln.widgets",),
        "course/command.py": ("clipaln.course.editions", "clipaln.course.grading"),
    }
    local = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for name, at_top in _imports(path):
            if name.startswith("clipaln") and not at_top and not name.startswith(allowed.get(rel, ("-",))):
                local.append(f"{rel}: {name}")
    assert not local, "function-local package imports (a hidden cycle?): " + ", ".join(local)


def test_the_command_line_starts_without_matplotlib_or_the_course_machinery():
    """`clipaln train ...` parses and runs without importing the players (matplotlib, ipywidgets) or
    the course's notebook machinery (nbformat, nbclient): they load with the command that uses them."""
    import subprocess
    import sys

    heavy = ("matplotlib", "ipywidgets", "nbformat", "nbclient", "clipaln.widgets", "clipaln.course.editions")
    code = f"import sys, clipaln.commands as c; c.build_parser(); print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_cli_parses_and_prints_in_short_functions():
    """The CLI parses, calls one library function and prints (issue 30): no function of clipaln.cli or
    clipaln.commands runs past 30 lines; the flag tables live beside what they parse."""
    long = []
    for name in ("cli.py", "commands.py"):
        for node in ast.parse((PACKAGE / name).read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 30:
                long.append(f"{name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


#: The most lines a module of the package may hold: past it, a module does two jobs (issue 39).
MAX_MODULE_LINES = 450


def test_no_module_holds_more_than_one_job_by_its_length():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_every_public_function_is_fully_annotated():
    """Issue 30: the public API is typed (py.typed ships): every parameter and return of a public
    function or method of a public class carries an annotation."""
    bare = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            public_class = isinstance(node, ast.ClassDef) and not node.name.startswith("_")
            functions = [node] if isinstance(node, ast.FunctionDef) else (node.body if public_class else [])
            for f in functions:
                if not isinstance(f, ast.FunctionDef) or f.name.startswith("_"):
                    continue
                args = [a for a in f.args.args + f.args.kwonlyargs if a.arg not in ("self", "cls")]
                if f.returns is None or any(a.annotation is None for a in args):
                    bare.append(f"{path.relative_to(PACKAGE)}:{f.name}")
    assert not bare, bare


def _dependencies() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports, at any level, and those it names
    to importlib.import_module. `from . import x` depends on the module x, not on the package's __init__."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = {n for n, _ in _imports(path)}
        imported -= {n for n in imported if any(m.startswith(n + ".") and m in modules for m in imported)}
        imported |= set(re.findall(r"import_module\(\s*[\"'](clipaln[\w.]*)[\"']", path.read_text()))
        deps = set()
        for n in imported:
            while n and n not in modules:
                n = n.rpartition(".")[0]
            if n and n not in (name, "clipaln"):
                deps.add(n)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, done = [], set()

    def visit(node, stack):
        for dep in sorted(graph.get(node, ())):
            if dep in stack:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in done:
                visit(dep, stack + [dep])
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node, [node])
    return cycles


def test_no_import_cycle_including_import_module_strings():
    assert _cycles(_dependencies()) == []
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]  # the check sees one


def test_the_readmes_data_flow_line_is_the_import_graph():
    """No module imports one that the README's line places after it (`a -> b`: b may import a)."""
    line = next(
        ln for ln in (PACKAGE.parent / "README.md").read_text().splitlines() if ln.strip().startswith("data ->")
    )
    stages = [re.split(r"\s*[/,]\s*", stage.strip()) for stage in line.split("->")]
    rank = {name: i for i, stage in enumerate(stages) for name in stage if name != "notebooks"}
    graph = _dependencies()

    def stage_of(module: str) -> int | None:
        parts = module.split(".")
        return rank.get(parts[1]) if len(parts) > 1 else None

    upward = []
    for module, deps in graph.items():
        here = stage_of(module)
        for dep in deps:
            there = stage_of(dep)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} imports {dep}")
    assert not upward, upward


def test_test_files_are_named_for_what_they_test_not_for_a_review():
    """Tests mirror the package's subjects (test_<module>.py or the subject: run folder, resume, ...)."""
    names = [p.name for p in (PACKAGE.parent / "tests").glob("test_*.py")]
    assert len(names) >= 40
    assert [n for n in names if re.search(r"hostile|pass\d|review|trust|round\d|issue", n)] == []


def test_contributing_names_tests_that_exist_and_examples_that_run():
    """Each recipe of CONTRIBUTING.md names the test that runs it: that test exists, and so do the
    example files it shows."""
    text = (PACKAGE.parent / "CONTRIBUTING.md").read_text()
    named = re.findall(r"tests/(test_\w+\.py)::(test_\w+)", text)
    assert len(named) >= 4
    for file, test in named:
        assert f"def {test}(" in (PACKAGE.parent / "tests" / file).read_text(), (file, test)
    for example in re.findall(r"tests/examples/(\w+\.py)", text):
        assert (PACKAGE.parent / "tests" / "examples" / example).is_file(), example


#: The public API whose docstrings are contracts (torchtune's style): the top-level names, the
#: preference losses and what the command line's commands call.
CONTRACTS = (
    *(f"clipaln.{n}" for n in ("load_clip", "SharedProjection", "SpectralScorer", "PreferenceData", "fit_projection")),
    *(f"clipaln.{n}" for n in ("export", "FeatureCache", "similarities", "read_pairs", "preference_accuracy")),
    "clipaln.register_loss",
    *(f"clipaln.losses.{n}" for n in ("preference_margin", "dpo", "ipo", "cdpo", "kto", "kl_regularizer", "ce")),
    *(f"clipaln.runs.{n}" for n in ("train_run", "eval_run", "export_run", "export_finetuned", "make_spec")),
    "clipaln.runs.features",
    "clipaln.policy.logprobs",
    *(f"clipaln.SharedProjection.{n}" for n in ("scaled", "save", "load")),
    "clipaln.SpectralScorer.scores",
    "clipaln.PreferenceData.from_captions",
    "clipaln.FeatureCache.get",
)


def _documented_args(doc: str) -> list[str] | None:
    """The parameter names listed under a docstring's "Args:" (None when it has no such section)."""
    lines = doc.splitlines()
    if "Args:" not in [ln.strip() for ln in lines]:
        return None
    start = [ln.strip() for ln in lines].index("Args:") + 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    names = []
    for ln in lines[start:]:
        if not ln.strip():
            break
        if len(ln) - len(ln.lstrip()) == indent:
            names.append(ln.strip().split(":")[0].lstrip("*"))
    return names


@pytest.mark.parametrize("name", CONTRACTS)
def test_the_public_api_documents_every_argument_and_what_it_returns(name):
    import importlib
    import inspect

    module, *attrs = name.split(".")
    obj = importlib.import_module(module)
    for attr in attrs:
        obj = getattr(obj, attr) if hasattr(obj, attr) else importlib.import_module(f"{obj.__name__}.{attr}")
    doc = inspect.getdoc(obj) or ""
    target = obj.__init__ if inspect.isclass(obj) else obj
    if inspect.isclass(obj) and obj.__init__ is object.__init__:
        target = obj
    params = [p for p in inspect.signature(target).parameters if p not in ("self", "cls")]
    assert _documented_args(doc) == params, f"{name}: Args: {_documented_args(doc)}, signature: {params}"
    if not inspect.isclass(obj):
        assert "\nReturns:\n" in doc, f"{name} does not say what it returns"


def test_the_args_reader_reads_names_and_misses_a_missing_section():
    doc = "One line.\n\nArgs:\n    a: one.\n        more on a.\n    **rest: others.\n\nReturns:\n    int: x."
    assert _documented_args(doc) == ["a", "rest"]
    assert _documented_args("One line.") is None
