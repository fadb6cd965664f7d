"""The gRPC API reference page, rendered from the .proto file itself (comments included) at build time.

``grpc_tools.protoc --include_source_info --descriptor_set_out`` compiles the proto to a descriptor
that keeps every comment beside the element it documents; this module renders that descriptor as
Markdown. A service, message, field or value added to the proto appears here with its comment.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from google.protobuf import descriptor_pb2

# Field numbers in descriptor.proto: how SourceCodeInfo locations address each element.
FILE_MESSAGES, FILE_ENUMS, FILE_SERVICES, FILE_SYNTAX = 4, 5, 6, 12
MESSAGE_FIELDS, MESSAGE_NESTED = 2, 3
ENUM_VALUES, SERVICE_METHODS = 2, 2

SCALAR_NAMES = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
    if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")


def compile_descriptor(proto_root: Path, proto_file: str) -> descriptor_pb2.FileDescriptorProto:
    """``proto_file`` (relative to ``proto_root``) compiled with its source info (comments, positions)."""
    # grpcio-tools (the dev extra's pinned generator), in a child process: protoc run in-process
    # segfaulted in a test worker that had loaded grpc and jaxlib before it (CI of 2026-12-07).
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "descriptor.pb"
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}", "--include_source_info",
                   f"--descriptor_set_out={out}", str(proto_root / proto_file)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"protoc could not compile {proto_root / proto_file} "
                               f"(exit {result.returncode}): {result.stderr.strip()}")
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return descriptor_set.file[0]


def comments_by_path(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Each element's leading (else trailing) comment, keyed by its source-location path."""
    comments = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text.strip():
            comments[tuple(location.path)] = text
    return comments


def header_comment(file: descriptor_pb2.FileDescriptorProto) -> str:
    """The comment block at the top of the file (before ``syntax``), line breaks kept."""
    for location in file.source_code_info.location:
        if tuple(location.path) == (FILE_SYNTAX,):
            blocks = [*location.leading_detached_comments, location.leading_comments]
            return textwrap.dedent("\n".join(block.rstrip() for block in blocks if block.strip()))
    return ""


def prose(comment: str) -> str:
    """A proto comment as one Markdown paragraph, with Markdown's special characters escaped."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(comment.split()))


def type_name(field: descriptor_pb2.FieldDescriptorProto, maps: dict[str, str]) -> str:
    """The field's type as written in the proto, linked when it is one of this file's messages or enums."""
    if field.type in (field.TYPE_MESSAGE, field.TYPE_ENUM):
        short = field.type_name.rsplit(".", 1)[-1]
        if field.type_name in maps:
            return maps[field.type_name]
        return f"[`{short}`](#{short})"
    return f"`{SCALAR_NAMES[field.type]}`"


def map_types(file: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """``map<K, V>`` for each generated MapEntry message, by its full type name."""
    maps = {}
    for message in file.message_type:
        for nested in message.nested_type:
            if nested.options.map_entry:
                key, value = nested.field
                full = f".{file.package}.{message.name}.{nested.name}"
                key_type, value_type = (SCALAR_NAMES.get(part.type, part.type_name) for part in (key, value))
                maps[full] = f"`map<{key_type}, {value_type}>`"
    return maps


def field_label(field: descriptor_pb2.FieldDescriptorProto, maps: dict[str, str]) -> str:
    if field.type_name in maps:
        return ""
    if field.label == field.LABEL_REPEATED:
        return "repeated "
    return "optional " if field.proto3_optional else ""


def linked_message(full_type_name: str, streaming: bool) -> str:
    short = full_type_name.rsplit(".", 1)[-1]
    return ("stream " if streaming else "") + f"[`{short}`](#{short})"


def render_service(file: descriptor_pb2.FileDescriptorProto, comments: dict[tuple[int, ...], str]) -> list[str]:
    lines: list[str] = []
    for service_index, service in enumerate(file.service):
        lines += ["", f"## Service `{service.name}` {{ #{service.name} }}", ""]
        lines += [prose(comments.get((FILE_SERVICES, service_index), "")), ""]
        lines += ["| method | request | response |", "|---|---|---|"]
        for method in service.method:
            request = linked_message(method.input_type, method.client_streaming)
            response = linked_message(method.output_type, method.server_streaming)
            lines.append(f"| [`{method.name}`](#{method.name}) | {request} | {response} |")
        for method_index, method in enumerate(service.method):
            request = ("stream " if method.client_streaming else "") + method.input_type.rsplit(".", 1)[-1]
            response = ("stream " if method.server_streaming else "") + method.output_type.rsplit(".", 1)[-1]
            full_name = f"{file.package}.{service.name}/{method.name}"
            lines += ["", f"### {method.name} {{ #{method.name} }}", "", "```protobuf",
                      f"rpc {method.name}({request}) returns ({response});  // {full_name}", "```", ""]
            lines.append(prose(comments.get((FILE_SERVICES, service_index, SERVICE_METHODS, method_index), "")))
    return lines


def render_messages(file: descriptor_pb2.FileDescriptorProto, comments: dict[tuple[int, ...], str]) -> list[str]:
    maps = map_types(file)
    lines = ["", "## Messages"]
    for message_index, message in enumerate(file.message_type):
        lines += ["", f"### {message.name} {{ #{message.name} }}", ""]
        comment = comments.get((FILE_MESSAGES, message_index))
        if comment:
            lines += [prose(comment), ""]
        if not message.field:
            lines.append("No fields.")
            continue
        lines += ["| field | type | number | what it holds |", "|---|---|---|---|"]
        for field_index, field in enumerate(message.field):
            text = prose(comments.get((FILE_MESSAGES, message_index, MESSAGE_FIELDS, field_index), ""))
            kind = field_label(field, maps) + type_name(field, maps)
            lines.append(f"| `{field.name}` | {kind} | {field.number} | {text} |")
    return lines


def render_enums(file: descriptor_pb2.FileDescriptorProto, comments: dict[tuple[int, ...], str]) -> list[str]:
    lines = ["", "## Enums"]
    for enum_index, enum in enumerate(file.enum_type):
        lines += ["", f"### {enum.name} {{ #{enum.name} }}", ""]
        comment = comments.get((FILE_ENUMS, enum_index))
        if comment:
            lines += [prose(comment), ""]
        lines += ["| value | number | what it means |", "|---|---|---|"]
        for value_index, value in enumerate(enum.value):
            text = prose(comments.get((FILE_ENUMS, enum_index, ENUM_VALUES, value_index), ""))
            lines.append(f"| `{value.name}` | {value.number} | {text} |")
    return lines


def render_grpc_reference(proto_root: Path, proto_file: str) -> str:
    """Markdown for the proto file: its header comment, services, messages and enums with their comments."""
    file = compile_descriptor(proto_root, proto_file)
    comments = comments_by_path(file)
    header = header_comment(file)
    lines = [
        "# gRPC API reference",
        "",
        f"Package `{file.package}`, defined in `protos/{proto_file}`. This page is generated from that file",
        "when the site is built, comments included, so it always matches the wire contract. The server also",
        "offers `grpc.health.v1.Health` and server reflection (`grpcurl -plaintext HOST:PORT describe`).",
        "How to call it from Python, grpcurl and Node: [Calling the service](../guides/clients.md).",
    ]
    if header:
        lines += ["", "## The wire contract, from the file's header", "", "```text", header, "```"]
    lines += render_service(file, comments) + render_messages(file, comments) + render_enums(file, comments)
    return "\n".join(lines) + "\n"
