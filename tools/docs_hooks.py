"""MkDocs hooks: the docs quote the scripts, so pages and code cannot drift apart.

In a page, a line of its own
    :::code ppo.py compute_gae      the source of a top-level function or class (or `docstring`:
                                    the module docstring), as a Python block titled with its line
    :::outline ppo.py               every top-level definition of the file in reading order: line,
                                    name, the first paragraph of its docstring
    :::flags ppo.py                 every field of the file's Args: flag, default, its docstring
is replaced at build time; a missing file or name stops the build (mkdocs build --strict). The
learning curves in benchmark/results/ are served under results/.
"""

import ast
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(r"^:::(code|outline|flags) +(\S+)(?: +(\S+))? *$", re.MULTILINE)


def parse(script: str) -> tuple[str, ast.Module]:
    path = ROOT / script
    if not path.is_file():
        raise PluginError(f"docs quote {script}, which does not exist")
    source = path.read_text()
    return source, ast.parse(source)


def definitions(tree: ast.Module) -> list[ast.stmt]:
    return [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]


def quote(script: str, name: str | None) -> str:
    source, tree = parse(script)
    if name == "docstring":
        return f'```text title="{script}: module docstring"\n{ast.get_docstring(tree)}\n```'
    node = next((node for node in definitions(tree) if node.name == name), None)
    if node is None:
        raise PluginError(f"docs quote {script}: {name}, which is not a top-level function or class there")
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    code = "\n".join(source.splitlines()[first - 1 : node.end_lineno])
    return f'```python title="{script}, line {first}: {name}"\n{code}\n```'


def outline(script: str) -> str:
    _, tree = parse(script)
    rows = ["| line | definition | what it is |", "|---|---|---|"]
    for node in definitions(tree):
        kind = "class" if isinstance(node, ast.ClassDef) else "def"
        summary = (ast.get_docstring(node) or "").split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        rows.append(f"| {node.lineno} | `{kind} {node.name}` | {summary} |")
    return "\n".join(rows)


def flags(script: str) -> str:
    """The Args fields as tyro shows them in --help: --flag-name, default, docstring."""
    _, tree = parse(script)
    args = next((node for node in definitions(tree) if node.name == "Args"), None)
    if args is None:
        raise PluginError(f"docs list the flags of {script}, which has no Args class")
    rows = ["| flag | default | meaning |", "|---|---|---|"]
    for field, doc in zip(args.body, [*args.body[1:], None], strict=True):
        if not isinstance(field, ast.AnnAssign):
            continue
        default = ast.unparse(field.value) if field.value is not None else "(required)"
        if "__file__" in default:
            default = "the script's name"
        meaning = doc.value.value if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) else ""
        meaning = " ".join(meaning.split()).replace("|", "\\|")
        rows.append(f"| `--{field.target.id.replace('_', '-')}` | `{default}` | {meaning} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(match: re.Match) -> str:
        kind, script, name = match.groups()
        if kind == "code":
            return quote(script, name)
        return outline(script) if kind == "outline" else flags(script)

    return DIRECTIVE.sub(replace, markdown)


def on_files(files, config):
    for image in sorted((ROOT / "benchmark" / "results").glob("*.png")):
        files.append(
            File(f"results/{image.name}", str(ROOT / "benchmark"), config["site_dir"], config["use_directory_urls"])
        )
    return files
