"""House rules for the package layout, read from the source with `ast` (nothing is imported).

Every import counts, including the ones inside functions: a deferred import still ties two modules
together, it only hides the tie until run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "lightning_cv"
MAX_FUNCTION_LINES = 60


def python_files(root: Path) -> list[Path]:
    """Every `.py` file under the package root, in a stable order."""
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path, root: Path) -> str:
    """`root/a/b.py` -> `pkg.a.b`; `root/a/__init__.py` -> `pkg.a` (the package is its `__init__`)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_exists(name: str, root: Path) -> bool:
    """Whether `name` is a module or a package (with or without `__init__.py`) under the package root."""
    parts = name.split(".")
    if parts[0] != root.name:
        return False
    base = root.joinpath(*parts[1:])
    return base.with_suffix(".py").is_file() or base.is_dir()


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def resolve_from(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a `from ... import` reads from (relative imports resolved against the importer)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    if node.level > 1:
        package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, node.module] if node.module else package)


def imports_of(path: Path, root: Path) -> Iterator[tuple[str, str, int]]:
    """(imported module, imported name, line) for every import of the package in one file, at any depth.

    `from a.b import c` is an import of module `a.b.c` when that module exists, else of `a.b`.
    """
    importer = module_name(path, root)
    is_package = path.name == "__init__.py"
    prefix = root.name
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == prefix or alias.name.startswith(prefix + "."):
                    yield alias.name, alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = resolve_from(node, importer, is_package)
            if source != prefix and not source.startswith(prefix + "."):
                continue
            for alias in node.names:
                child = f"{source}.{alias.name}"
                target = child if alias.name != "*" and module_exists(child, root) else source
                yield target, alias.name, node.lineno


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]], dict[str, Path]]:
    """Module -> imported modules, the names behind each edge, and each module's file."""
    graph: dict[str, set[str]] = {}
    names: dict[tuple[str, str], list[str]] = {}
    files: dict[str, Path] = {}
    for path in python_files(root):
        source = module_name(path, root)
        files[source] = path
        graph.setdefault(source, set())
        for target, name, line in imports_of(path, root):
            if target == source:
                continue
            graph[source].add(target)
            graph.setdefault(target, set())
            names.setdefault((source, target), []).append(f"{name} (line {line})")
    return graph, names, files


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit): every component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def cycle_report(root: Path) -> str:
    """Empty when the package has no import cycle; else each cycle's modules and the imports to cut."""
    graph, names, files = import_graph(root)
    top = root.parent

    def where(module: str) -> str:
        return str(files[module].relative_to(top)) if module in files else module

    blocks = []
    for component in strongly_connected(graph):
        members = set(component)
        lines = [f"cycle of {len(component)} modules: {', '.join(component)}"]
        for source in component:
            for target in sorted(graph[source] & members):
                lines.append(f"    {where(source)} -> {where(target)}: {', '.join(names[source, target])}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def forbidden_imports(root: Path, layers: list[str], forbidden: str) -> list[str]:
    """`file:line imports target` for each import of `forbidden` (or below) from files under `layers`."""
    found = []
    for layer in layers:
        base = root / layer
        paths = [base] if base.suffix == ".py" else python_files(base) if base.is_dir() else []
        for path in paths:
            for target, name, line in imports_of(path, root):
                if target == forbidden or target.startswith(forbidden + "."):
                    found.append(f"{path.relative_to(root.parent)}:{line} imports {target} ({name})")
    return sorted(found)


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """`path:line name (N lines)` for each function or method longer than `limit` lines.

    A function spans from its `def` line to its last line: decorators are not counted, the docstring is.
    """
    found = []
    for path in python_files(root):
        for node in ast.walk(parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(
                        f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)"
                    )
    return found


def test_package_has_no_import_cycle():
    report = cycle_report(PACKAGE_ROOT)
    if report:
        pytest.fail(
            "import cycles (cut one import in each, e.g. by moving the shared code down):\n" + report,
            pytrace=False,
        )


# The rooms of the package in the order data flows, lowest first: a room imports only rooms of lower layers
# (and itself). Rooms of one layer stay independent of each other.
LAYERS = [
    {"errors", "_env"},                      # errors and environment defaults
    {"__init__"},                            # the package's face (imports _env)
    {"io"},                                  # files in
    {"models", "predictions", "pictures"},   # model parts; files out; pictures
    {"data"},                                # DataModules, folds, augmentations, demos
    {"tasks"},                               # the task protocol, the registry, checkpoints
    {"training"},                            # callbacks, Trainer, loggers, provenance
    {"report"},                              # the HTML report
    {"cli"},                                 # the LightningCLI and the commands
    {"__main__"},
]


def room(module: str) -> str:
    """`lightning_cv.io.masks` -> `io`; `lightning_cv.errors` -> `errors`; the package itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_report(root: Path) -> list[str]:
    """Each import that runs up or sideways between rooms, with its file and line."""
    level = {name: i for i, names in enumerate(LAYERS) for name in names}
    found = []
    for path in python_files(root):
        source = room(module_name(path, root))
        for target, name, line in imports_of(path, root):
            target_room = room(target)
            if target_room == source:
                continue
            if target_room not in level or source not in level:
                found.append(f"{path.relative_to(root.parent)}: room {source if source not in level else target_room} has no layer")
            elif level[target_room] >= level[source]:
                kind = "up" if level[target_room] > level[source] else "sideways"
                found.append(f"{path.relative_to(root.parent)}:{line} {source} -> {target_room} ({name}): runs {kind}")
    return sorted(set(found))


def test_layers_import_only_rooms_below():
    found = layer_report(PACKAGE_ROOT)
    if found:
        pytest.fail("imports that run up or sideways (layers, lowest first: "
                    + " < ".join("/".join(sorted(names)) for names in LAYERS) + "):\n" + "\n".join(found), pytrace=False)


def test_the_root_is_the_face_and_every_room_says_what_it_holds():
    """At most 4 modules at the package root; each subpackage's `__init__` docstring says what it holds and
    what it may import."""
    modules = sorted(p.name for p in PACKAGE_ROOT.glob("*.py"))
    assert len(modules) <= 4, modules
    for init in sorted(PACKAGE_ROOT.rglob("__init__.py")):
        doc = ast.get_docstring(parse(init)) or ""
        assert len(doc.split()) >= 12 and "import" in doc.lower(), f"{init}: docstring should say what it holds and may import"


def test_the_layer_check_finds_an_import_that_runs_up(tmp_path):
    package = tmp_path / PACKAGE_ROOT.name
    for folder, text in (("io", "from lightning_cv.tasks.base import CVTask\n"), ("tasks", "from lightning_cv.io.images import x\n")):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text('"""x"""\n')
        (package / folder / "m.py").write_text(text)
    assert layer_report(package) == [f"{PACKAGE_ROOT.name}/io/m.py:1 io -> tasks (CVTask): runs up"]


def test_no_function_over_60_lines():
    found = long_functions(PACKAGE_ROOT)
    if found:
        pytest.fail(
            f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(found), pytrace=False
        )
