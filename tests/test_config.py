"""The tool registry and settings: every broken file named by file, tool and key path; `check` exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcp_gateway.errors import ConfigError
from mcp_gateway.registry import load_registry
from mcp_gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
tools:
  - name: {name}
    description: A tool.
    subject: team.{name}
    input_schema: {{type: object, properties: {{x: {{type: string}}}}}}
"""


def problems(tmp_path: Path, **files: str) -> list[str]:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_registry(tmp_path)
    return [str(p) for p in info.value.problems]


def test_the_shipped_config_loads() -> None:
    registry = load_registry(ROOT / "config" / "tools")
    assert {"echo", "classify_ticket", "lookup_order", "refund_order"} <= set(registry)
    fixtures = load_registry(ROOT / "config" / "conformance")
    schema = fixtures["json_schema_2020_12_tool"].listing.input_schema  # strict: false keeps it as written
    assert schema["$defs"]["address"] == {
        "$anchor": "addressDef",
        "type": "object",
        "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
    }
    assert schema["then"] == {"required": ["phone"]} and "additionalProperties" in schema


def test_bad_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, broken="tools: [ {name: x")
    assert "broken.yaml" in found and "not valid YAML" in found and "line 1" in found


def test_unknown_key_missing_subject_bad_name(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        team="""
tools:
  - name: "bad name!"
    description: x
    input_schema: {type: object}
    colour: red
""",
    )
    joined = "\n".join(found)
    assert "team.yaml: tool 'bad name!': tools[0].name:" in joined and "not a valid MCP tool name" in joined
    assert "tools[0].subject: required key is missing" in joined
    assert "tools[0].colour: unknown key" in joined
    assert len(found) == 3


def test_invalid_json_schema_names_the_key_path(tmp_path: Path) -> None:
    (found,) = problems(
        tmp_path,
        team="""
tools:
  - name: t
    description: x
    subject: a.b
    input_schema: {type: object, properties: {x: {type: strin}}}
""",
    )
    assert "tool 't': tools[0].input_schema: invalid JSON Schema at /properties/x/type" in found


def test_schema_root_must_be_object_and_draft_2020_12(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        team="""
tools:
  - name: a
    description: x
    subject: a.b
    input_schema: {type: array}
  - name: b
    description: x
    subject: a.c
    input_schema: {$schema: "http://json-schema.org/draft-07/schema#", type: object}
""",
    )
    assert any("tool 'a'" in p and '"type": "object"' in p for p in found)
    assert any("tool 'b'" in p and "2020-12" in p for p in found)


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, one=GOOD.format(name="dup"), two=GOOD.format(name="dup"))
    assert "two.yaml: tool 'dup': tools[0].name: duplicate tool name, first declared in" in found
    assert "one.yaml" in found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(tmp_path, a="tools: 3", b="- just a list", c=GOOD.format(name="fine"))
    assert len(found) == 2
    assert any("a.yaml: tools: must be a list" in p for p in found)
    assert any("b.yaml: must be a mapping" in p for p in found)


def test_bad_subject_and_timeout(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        team="""
tools:
  - name: t
    description: x
    subject: "a.*"
    timeout: -1
    input_schema: {type: object}
""",
    )
    assert any("tools[0].subject" in p and "not a NATS subject" in p for p in found)
    assert any("tools[0].timeout" in p and "greater than 0" in p for p in found)


def test_strict_closes_objects_unless_told(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        """
tools:
  - name: closed
    description: x
    subject: a.b
    input_schema: {type: object, properties: {x: {type: object, properties: {y: {type: string}}}}}
  - name: open
    description: x
    subject: a.c
    input_schema: {type: object, additionalProperties: true}
  - name: loose
    description: x
    subject: a.d
    strict: false
    input_schema: {type: object, properties: {x: {type: string}}}
"""
    )
    registry = load_registry(tmp_path)
    assert registry["closed"].input.violations({"x": {"y": "ok", "z": 1}})[0].path == "/x"
    assert registry["closed"].input.violations({"x": {}, "w": 1})[0].path == ""
    assert registry["open"].input.violations({"anything": 1}) == []
    assert registry["loose"].input.violations({"x": "a", "more": 1}) == []


def test_settings_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text("port: many\ncolour: red\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    joined = str(info.value)
    assert "gateway.yaml: port: Input should be a valid integer" in joined
    assert "colour: unknown setting" in joined


def test_settings_relative_paths_follow_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "gateway.yaml").write_text("tools_dir: tools\ndata_dir: ../state\n")
    monkeypatch.setenv("MCPGW_PORT", "9001")
    settings = load_settings(tmp_path / "conf" / "gateway.yaml")
    assert settings.tools_dir == tmp_path / "conf" / "tools"
    assert settings.data_dir == tmp_path / "state"
    assert settings.port == 9001


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_gateway", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_check_command_passes_on_the_shipped_config() -> None:
    done = run_cli("check")
    assert done.returncode == 0, done.stderr
    assert "refund_order v1.0.0 -> support.orders.refund" in done.stdout


def test_check_command_fails_with_every_problem(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("tools:\n  - name: x\n    description: d\n    input_schema: {type: object}\n")
    (tmp_path / "b.yaml").write_text("tools: [")
    done = run_cli("check", "--tools-dir", str(tmp_path))
    assert done.returncode == 1
    assert "2 config problem(s)" in done.stderr
    assert "a.yaml: tool 'x': tools[0].subject: required key is missing" in done.stderr
    assert "b.yaml: not valid YAML" in done.stderr
    assert done.stdout == ""


def test_serve_refuses_a_broken_registry(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("tools:\n  - {name: x, description: d, subject: s, input_schema: {type: 1}}\n")
    done = run_cli("serve", "--tools-dir", str(tmp_path))
    assert done.returncode == 1
    assert "a.yaml: tool 'x': tools[0].input_schema: invalid JSON Schema" in done.stderr


def test_prompt_errors_are_named(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        one="""
prompts:
  - name: p
    arguments: [{name: a, required: true}]
    messages:
      - {role: user, content: {type: text, text: "uses {a} and {b}"}}
""",
        two="""
prompts:
  - name: q
    messages:
      - {role: robot, content: {type: text, text: hi}}
      - {role: user, content: {type: image, mimeType: image/png}}
""",
    )
    joined = "\n".join(found)
    assert "one.yaml: prompt 'p': prompts[0].messages[0].content: {b} names no argument" in joined
    assert "two.yaml: prompt 'q': prompts[0].messages[0].role" in joined
    assert "prompts[0].messages[1].content: not an MCP content block: data: Field required" in joined


def test_prompts_render_and_complete(tmp_path: Path) -> None:
    from mcp_gateway.registry import PromptError

    prompts = load_registry(ROOT / "config" / "conformance").prompts
    rendered = prompts["test_prompt_with_arguments"].render({"arg1": "x", "arg2": "y"})
    assert "arg1='x', arg2='y'" in str(rendered.messages[0].content)
    with pytest.raises(PromptError, match=r"needs argument\(s\) \['arg2'\]"):
        prompts["test_prompt_with_arguments"].render({"arg1": "x"})
    with pytest.raises(PromptError, match="has no argument"):
        prompts["test_simple_prompt"].render({"zzz": "1"})
    assert prompts["test_prompt_with_arguments"].complete("arg1", "test") == ["test", "testValue1"]


def test_resource_errors_are_named(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        r="""
resources:
  - {uri: "no scheme", name: a, text: x}
  - {uri: "test://b", name: b, text: x, blob: eA==}
  - {uri: "test://c", name: c, blob: "not base64!"}
resource_templates:
  - {uri_template: "test://{unclosed", name: t, subject: a.b}
  - {uri_template: "test://{id}", name: u}
""",
    )
    joined = "\n".join(found)
    assert "resource 'no scheme': resources[0].uri" in joined
    assert "resources[1]: Value error" not in joined and "exactly one of 'text' or 'blob'" in joined
    assert "'blob' is not valid base64" in joined
    assert "resource_templates[0].uri_template: not a URI template" in joined
    assert "resource_templates[1].subject: required key is missing" in joined


def test_header_annotations_are_checked(tmp_path: Path) -> None:
    """`x-mcp-header` (SEP-2243), by the SDK's own rule: an HTTP token, on a string, integer or boolean property
    reached through `properties`, unique case aside. A tool that breaks it is named; the rest load."""
    tool = """
  - name: {name}
    description: x
    subject: team.{name}
    input_schema:
      type: object
      properties:
        {properties}
"""
    bad = {
        "spaced": 'a: {type: string, x-mcp-header: "My Region"}',
        "number": "b: {type: number, x-mcp-header: Score}",
        "twice": "c: {type: string, x-mcp-header: Region}\n        d: {type: string, x-mcp-header: region}",
        "nested": "e: {type: object, properties: {f: {type: array, x-mcp-header: F}}}",
    }
    text = "tools:" + "".join(tool.format(name=n, properties=p) for n, p in bad.items())
    found = problems(tmp_path, team=text)
    assert len(found) == 4, found
    for index, name in enumerate(bad):
        assert any(f"tool {name!r}: tools[{index}].input_schema" in f and "x-mcp-header" in f for f in found), found
    good = load_registry(ROOT / "config" / "conformance")["test_custom_headers"]
    assert good.listing.input_schema["properties"]["region"]["x-mcp-header"] == "Region"


def test_prompts_ask_for_arguments_left_out(tmp_path: Path) -> None:
    prompt = load_registry(ROOT / "config" / "conformance").prompts["test_input_required_result_prompt"]
    question = prompt.question({})
    assert question is not None and question["message"] == "What context should the prompt use?"
    assert question["schema"]["required"] == ["context"]
    assert prompt.question({"context": "given"}) is None
    filled = prompt.answered({}, {"context": "weather", "unasked": "x"})
    assert filled == {"context": "weather"}


def test_entries_that_are_not_mappings_and_repeated_resources(tmp_path: Path) -> None:
    """Every section: an entry that is not a mapping is named, not a crash; resource URIs and template names
    are unique like tool and prompt names."""
    resource = "{uri: 'test://a', name: a, text: hi}"
    template = "{uri_template: 'test://t/{id}', name: t, subject: team.t}"
    found = problems(
        tmp_path,
        scalars='tools: ["x"]\nprompts: [1]\nresources: ["x"]\nresource_templates: [true]\n',
        one=f"resources: [{resource}]\nresource_templates: [{template}]\n",
        two=f"resources: [{resource}]\nresource_templates: [{template}]\n",
    )
    joined = "\n".join(found)
    for where, kind in (("tools[0]", "str"), ("prompts[0]", "int"), ("resources[0]", "str")):
        assert f"scalars.yaml: {where}: must be a mapping, got {kind}" in joined, joined
    assert "scalars.yaml: resource_templates[0]: must be a mapping, got bool" in joined
    assert "two.yaml: resource 'test://a': resources[0].uri: duplicate resource uri, first declared in" in joined
    assert "two.yaml: resource template 't': resource_templates[0].name: duplicate resource template name" in joined
    assert len(found) == 6, joined


def test_reserved_names_are_the_builtin_tools() -> None:
    from mcp_gateway.registry import RESERVED_NAMES
    from mcp_gateway.server._workflow_tools import BUILTIN_TOOLS

    assert set(RESERVED_NAMES) == set(BUILTIN_TOOLS)


def test_formats_are_asserted_and_unknown_ones_refused(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(
        """
tools:
  - name: contact
    description: d
    subject: team.contact
    input_schema:
      type: object
      properties:
        email: {type: string, format: email}
        at: {type: string, format: date-time}
        day: {type: string, format: date}
        id: {type: string, format: uuid}
        site: {type: string, format: uri}
        ip: {type: string, format: ipv4}
"""
    )
    tool = load_registry(tmp_path)["contact"]
    good = {
        "email": "a@example.com",
        "at": "2026-12-01T10:00:00Z",
        "day": "2026-12-01",
        "id": "123e4567-e89b-12d3-a456-426614174000",
        "site": "https://example.com/x",
        "ip": "10.0.0.1",
    }
    assert tool.input.violations(good) == []
    bad = {"email": "not-an-email", "at": "yesterday", "day": "2026-13-01", "id": "x", "site": "no uri", "ip": "1.2"}
    found = {v.path: v.message for v in tool.input.violations(bad)}
    assert set(found) == {"/email", "/at", "/day", "/id", "/site", "/ip"}
    assert "email" in found["/email"]

    (found_problem,) = problems(
        tmp_path,
        f="tools:\n  - {name: t, description: d, subject: s.t, input_schema: "
        "{type: object, properties: {n: {type: string, format: credit-card}}}}\n",
    )
    assert "tools[0].input_schema" in found_problem and "/properties/n" in found_problem
    assert "format 'credit-card' is not one the gateway checks" in found_problem and "date-time" in found_problem


def test_the_listed_output_schema_of_a_handing_back_tool_keeps_its_references(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        """
tools:
  - name: refs
    description: d
    subject: team.refs
    mode: auto
    input_schema: {type: object}
    output_schema:
      type: object
      $defs: {money: {type: integer, minimum: 0}}
      properties:
        amount: {$ref: "#/$defs/money"}
        again: {$ref: "#/properties/amount"}
      required: [amount]
"""
    )
    import jsonschema_rs

    listed = load_registry(tmp_path)["refs"].listing.output_schema
    assert listed is not None
    validator = jsonschema_rs.Draft202012Validator(listed)
    assert validator.is_valid({"amount": 5, "again": 6})
    assert not validator.is_valid({"amount": -1})
    assert not validator.is_valid({"amount": 5, "again": -1})
    assert validator.is_valid({"workflow": {"id": "w", "status": "running", "uri": "workflow://w"}})
    assert not validator.is_valid({"workflow": {"id": "w"}})
