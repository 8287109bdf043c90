"""The import graph of the project: every import goes down the layers, and no modules import each other in a
circle (imports inside functions count: they climb just the same)."""
import ast
import os

from conftest import ROOT

# Lower numbers are lower layers; a module may import its own layer or lower ones. Entry points (train.py,
# test.py) sit above the library and below nothing: no module imports them.
LAYERS = {'utils': 0, 'dataset': 1, 'models': 1, 'methods': 2, 'checkpoint': 3, 'run_folder': 4,
          'evaluation': 5, 'trainer': 5, 'option': 5, 'packing': 5, 'run_setup': 5, 'experiments': 7, 'benchmarks': 7}
ENTRY_POINTS = ('train', 'test', 'train_pack')
SKIP = ('.venv', 'tests', 'data', 'runs', 'smoke', 'sweeps', '.git')


def project_modules():
    """{dotted module name: path} of every Python file of the project outside the tests."""
    found = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP and not d.startswith('.') and d != '__pycache__')
        for name in files:
            if name.endswith('.py'):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, '.')
                found[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(folder, name)
    return found


def imports_of(path, module, known):
    """The project modules ``path`` imports (resolved to the longest known name)."""
    tree = ast.parse(open(path, encoding='utf-8').read(), path)
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(p for p in parts + [base] if p)
            names += [f'{base}.{a.name}' for a in node.names] + [base]
    found = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition('.')[0]
        if name and name != module:
            found.add(name)
    return found


def graph():
    known = project_modules()
    return {m: imports_of(p, m, known) for m, p in known.items()}


def layer(module):
    return LAYERS.get(module.split('.')[0], 6 if module in ENTRY_POINTS else None)


def test_every_module_has_a_layer():
    assert not [m for m in graph() if layer(m) is None]


def test_imports_go_down_and_nothing_imports_an_entry_point():
    climbing = [(m, i) for m, deps in graph().items() for i in deps
                if i in ENTRY_POINTS or layer(i) > layer(m)]
    assert not climbing, climbing


def test_no_circle_of_imports():
    g = graph()
    # a package imports its own modules to re-export them; its modules import one another through the package's
    # name: count the package face as its modules
    state, circles = {}, []

    def visit(m, path):
        state[m] = 'open'
        for d in sorted(g.get(m, ())):
            if d.startswith(m + '.'):
                continue  # a package face importing its own modules
            if state.get(d) == 'open' and not m.startswith(d + '.'):
                circles.append(path + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 'done'
    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not circles, circles
