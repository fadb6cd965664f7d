"""The docs site's generated pages (docs/hooks/): built from the code, complete, and loud when they cannot be."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))

import cli_reference  # noqa: E402
import grpc_reference  # noqa: E402


def test_the_cli_reference_holds_every_subcommand_and_every_flag_of_its_parser() -> None:
    from breakout_dqn.cli import COMMANDS

    page = cli_reference.render_cli_reference(COMMANDS)
    for name, (module, _) in COMMANDS.items():
        assert f"## breakout-dqn {name}\n" in page
        parser = cli_reference.subcommand_parser(module)
        flags = [flag for action in parser._actions
                 if action.help is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
                 for flag in action.option_strings]
        assert flags, name
        for flag in flags:
            assert re.search(rf"\| `[^`]*{re.escape(flag)}\b", page), f"{name}: no table row for {flag}"


def test_a_subcommand_module_without_build_parser_stops_the_build() -> None:
    with pytest.raises(cli_reference.ReferenceError, match="json has no build_parser"):
        cli_reference.render_cli_reference({"broken": ("json", "a module without a parser")})


def test_the_cli_reference_shows_the_defaults_of_a_shell_without_the_projects_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from breakout_dqn.cli import COMMANDS

    monkeypatch.setenv("BREAKOUT_DQN_PORT", "6123")
    page = cli_reference.render_cli_reference({"serve": COMMANDS["serve"]})
    assert "6123" not in page
    assert "else 50051" in page


def test_the_grpc_reference_holds_every_rpc_message_field_and_enum_value_of_the_proto() -> None:
    from breakout.v1 import agent_pb2

    page = grpc_reference.render_grpc_reference(ROOT / "protos", "breakout/v1/agent.proto")
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    for method in service.methods:
        assert f"### {method.name} {{ #{method.name} }}" in page
    for message in agent_pb2.DESCRIPTOR.message_types_by_name.values():
        assert f"### {message.name} {{ #{message.name} }}" in page
        for field in message.fields:
            assert f"| `{field.name}` |" in page, f"{message.name}.{field.name}"
    for enum in agent_pb2.DESCRIPTOR.enum_types_by_name.values():
        for value in enum.values:
            assert f"| `{value.name}` | {value.number} |" in page


def test_the_grpc_reference_keeps_the_protos_comments_as_plain_text() -> None:
    page = grpc_reference.render_grpc_reference(ROOT / "protos", "breakout/v1/agent.proto")
    # GetActionRequest.frames' comment, its '*' and brackets escaped so Markdown shows them as written
    assert r"N \* 28,224 uint8 bytes, each stack \[84,84,4\] in C order" in page
    assert "`map<string, string>`" in page  # GetModelInfoResponse.metadata


def test_a_proto_that_does_not_compile_stops_the_build(tmp_path: Path) -> None:
    (tmp_path / "broken.proto").write_text('syntax = "proto3";\nmessage Broken { int32 = 1; }\n')
    with pytest.raises(RuntimeError, match="protoc could not compile"):
        grpc_reference.render_grpc_reference(tmp_path, "broken.proto")


def test_repository_links_become_site_links_and_code_is_left_alone() -> None:
    pytest.importorskip("mkdocs")
    import site_pages

    readme = ("[training](docs/guides/training.md#presets) [card](models/MODEL_CARD.md) "
              "[record](results/pqn-s1/README.md) [web](https://example.org/x.md) [here](#install)\n"
              "```md\n[kept](docs/guides/training.md)\n```\n[license](LICENSE)\n")
    rewritten = site_pages.rewrite_links(readme, "README.md", "index.md")
    assert "[training](guides/training.md#presets)" in rewritten
    assert "[card](model-card.md)" in rewritten
    assert "[record](results/pqn-s1/README.md)" in rewritten
    assert "[web](https://example.org/x.md)" in rewritten and "[here](#install)" in rewritten
    assert "[kept](docs/guides/training.md)" in rewritten  # inside a code block
    assert "[license](LICENSE)" in rewritten  # not on the site: left for the strict build to name

    card = site_pages.rewrite_links("[run](../results/pqn-s1/README.md)", "models/MODEL_CARD.md", "model-card.md")
    assert card == "[run](results/pqn-s1/README.md)"
    guide = site_pages.rewrite_links("[card](../../models/MODEL_CARD.md#limitations)",
                                     "docs/guides/training.md", "guides/training.md")
    assert guide == "[card](../model-card.md#limitations)"


def test_the_presets_table_has_a_column_per_preset_and_the_settings_that_differ() -> None:
    import presets_table

    from breakout_dqn.training.config import PRESETS

    table = presets_table.render_presets_table()
    header = table.splitlines()[0]
    for name in PRESETS:
        assert f"`{name}`" in header
    assert "| `--dueling` | yes | no |" in table  # default has the dueling head, cleanrl has not
    assert "| `--algorithm` |" in table
