"""mkdocs hook: the pages generated from the code, and the repository's own records, added at build time.

Nothing is written into the repository: each page is a virtual file of this build.

- ``reference/cli.md`` from the subcommands' argparse parsers, ``reference/grpc.md`` from the proto;
- the repository's Markdown that is also part of the site: the README as the home page, the model card,
  the changelog, and every run record under ``results/`` (its README, figures and JSON files), with
  relative links rewritten to the site's paths. A figure lives once, in its record, and pages link to it;
- ``<!-- generated: NAME -->`` in a page is replaced by the table NAME (e.g. ``presets``);
- a docs/ page links to the repository's files by their repository paths (``../../results/...``), which
  work on a code host too; its links are made relative to the page's place on the site.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from pathlib import Path

from cli_reference import render_cli_reference
from grpc_reference import render_grpc_reference
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from presets_table import render_presets_table

# Repository file -> its page on the site (the README's links to docs/... become links between pages).
MOUNTED_PAGES = {"README.md": "index.md", "CHANGELOG.md": "changelog.md", "models/MODEL_CARD.md": "model-card.md"}
RECORDS = "results"
RECORD_SUFFIXES = {".md", ".png", ".json", ".txt"}  # metrics.jsonl stays in the repository (~5 MB)
GENERATED_TABLES: dict[str, Callable[[], str]] = {"presets": render_presets_table}
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
FENCE = re.compile(r"^\s*(```|~~~)")
GENERATED_PAGES: set[str] = set()  # site paths this hook made (their links already point at site paths)


def repository_root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


def site_path(repository_path: str) -> str | None:
    """Where a repository file is on the site: mounted pages, records, and docs/ itself; else None."""
    if repository_path in MOUNTED_PAGES:
        return MOUNTED_PAGES[repository_path]
    if repository_path.startswith("docs/"):
        return repository_path.removeprefix("docs/")
    if repository_path.startswith(f"{RECORDS}/"):
        return repository_path
    return None


def rewrite_links(markdown: str, source: str, destination: str) -> str:
    """Relative links of ``source`` (a repository path) made relative to ``destination`` (a site path).

    A link to a repository file that is not on the site is left as it is, so the strict build names it.
    """
    def rewrite(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        on_site = site_path(resolved)
        if on_site is None:
            return match.group(0)
        relative = posixpath.relpath(on_site, posixpath.dirname(destination) or ".")
        return f"{match.group(1)}{relative}{'#' + anchor if anchor else ''}{match.group(3)}"

    lines, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if FENCE.match(line):
            fenced = not fenced
        lines.append(line if fenced else LINK.sub(rewrite, line))
    return "".join(lines)


def generated(config: MkDocsConfig, path: str, **source: str) -> File:
    GENERATED_PAGES.add(path)
    return File.generated(config, path, **source)


def generated_page(config: MkDocsConfig, path: str, render: Callable[[], str]) -> File:
    try:
        return generated(config, path, content=render())
    except Exception as error:  # any failure to render from the code stops the build, naming the page
        raise PluginError(f"cannot generate {path} from the code: {error}") from error


def on_startup(command: str, dirty: bool) -> None:
    """The installed package layout for mkdocstrings (``paths: [build/layout]`` in mkdocs.yml): the stage
    folders install under ``breakout_dqn`` (pyproject.toml's package-dir), which griffe cannot follow. Built
    before the plugins read their settings (mkdocstrings drops a search path that does not exist yet)."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("installed_layout", root / "scripts" / "installed_layout.py")
    assert spec is not None and spec.loader is not None
    layout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layout)
    layout.build_layout(root / "build" / "layout", root)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = repository_root(config)
    for source, destination in MOUNTED_PAGES.items():
        text = (root / source).read_text(encoding="utf-8")
        files.append(generated(config, destination, content=rewrite_links(text, source, destination)))
    for record_file in sorted((root / RECORDS).rglob("*")):
        if record_file.is_file() and record_file.suffix in RECORD_SUFFIXES:
            path = record_file.relative_to(root).as_posix()
            if record_file.suffix == ".md":
                text = rewrite_links(record_file.read_text(encoding="utf-8"), path, path)
                files.append(generated(config, path, content=text))
            else:
                files.append(generated(config, path, abs_src_path=str(record_file)))
    from breakout_dqn.cli import COMMANDS

    files.append(generated_page(config, "reference/cli.md", lambda: render_cli_reference(COMMANDS)))
    files.append(generated_page(config, "reference/grpc.md",
                                lambda: render_grpc_reference(root / "protos", "breakout/v1/agent.proto")))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Generated tables filled in; a docs/ page's repository-relative links (``../../results/...``,
    which also work on a code host) made relative to its place on the site."""
    if page.file.src_uri not in GENERATED_PAGES:
        markdown = rewrite_links(markdown, f"docs/{page.file.src_uri}", page.file.src_uri)

    def table(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATED_TABLES:
            known = sorted(GENERATED_TABLES)
            raise PluginError(f"{page.file.src_uri}: unknown generated table {name!r}; known: {known}")
        return GENERATED_TABLES[name]()

    return MARKER.sub(table, markdown)
