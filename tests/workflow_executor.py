"""A minimal ComfyUI graph executor for tests: validate and run an API-format workflow with the
pack's ``NODE_CLASS_MAPPINGS`` — no ComfyUI needed.

It checks what ComfyUI's ``execution.validate_prompt`` checks for our nodes, with messages that
say which node and input is wrong: every ``class_type`` is a known node, every input is declared,
required inputs are present, a link's source output type equals the input's declared type, combo
values are among the options and numbers are within min/max. Then it calls each node's FUNCTION in
topological order. ``ui_to_api`` converts a frontend (UI-format) workflow the way the frontend's
"Save (API)" does (a seed's "control after generate" value follows the frontend's rule, ``comfy.has_control_widget``), so tests can compare the shipped UI and API twins.
"""

from __future__ import annotations

import json
from pathlib import Path

from vdot_nodes.nodes.comfy import has_control_widget

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
FRONTEND_ONLY = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")


class WorkflowError(ValueError):
    """The workflow cannot run: unknown node, undeclared input, wrong socket type, bad value."""


def load_workflow(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _declared(cls) -> dict[str, tuple]:
    """name -> (type, options, required) of every input the class declares."""
    spec = cls.INPUT_TYPES()
    out = {}
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            out[name] = (decl[0], decl[1] if len(decl) > 1 else {}, section == "required")
    return out


def _is_widget(type_, opts: dict) -> bool:
    """A widget on the node: a combo, or a scalar the input does not force to be a socket."""
    return isinstance(type_, (list, tuple)) or (type_ in WIDGET_TYPES and not opts.get("forceInput"))


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def topological_order(workflow: dict) -> list[str]:
    """Node ids so that every node comes after the nodes it reads from; a cycle is an error."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(node_id: str, path: tuple) -> None:
        if state.get(node_id) == "done":
            return
        if state.get(node_id) == "visiting":
            raise WorkflowError(f"the graph has a cycle through nodes {' -> '.join(path + (node_id,))}")
        state[node_id] = "visiting"
        for value in workflow[node_id]["inputs"].values():
            if _is_link(value):
                if value[0] not in workflow:
                    raise WorkflowError(f"node {node_id} ({workflow[node_id]['class_type']}) reads from node "
                                        f"{value[0]}, which is not in the workflow")
                visit(value[0], path + (node_id,))
        state[node_id] = "done"
        order.append(node_id)

    for node_id in sorted(workflow, key=lambda k: int(k) if k.isdigit() else k):
        visit(node_id, ())
    return order


def _check_value(where: str, name: str, type_, opts: dict, value) -> None:
    if isinstance(type_, (list, tuple)):
        if value not in type_:
            raise WorkflowError(f"{where}: {name}={value!r} is not one of the options {list(type_)}")
        return
    python_type = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}[type_]
    if isinstance(value, bool) and type_ != "BOOLEAN" or not isinstance(value, python_type):
        raise WorkflowError(f"{where}: {name}={value!r} is not a {type_}")
    if type_ in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"]:
            raise WorkflowError(f"{where}: {name}={value} is below the minimum {opts['min']}")
        if "max" in opts and value > opts["max"]:
            raise WorkflowError(f"{where}: {name}={value} is above the maximum {opts['max']}")


def validate(workflow: dict, mappings: dict) -> list[str]:
    """Check the whole workflow before anything runs; returns the execution order."""
    for node_id, node in workflow.items():
        class_type = node.get("class_type")
        if class_type not in mappings:
            raise WorkflowError(f"node {node_id}: unknown node class {class_type!r} "
                                f"(not in NODE_CLASS_MAPPINGS; is the node pack installed?)")
    order = topological_order(workflow)
    for node_id in order:
        node = workflow[node_id]
        where = f"node {node_id} ({node['class_type']})"
        declared = _declared(mappings[node["class_type"]])
        for name, value in node["inputs"].items():
            if name not in declared:
                raise WorkflowError(f"{where}: input {name!r} is not declared by the node "
                                    f"(it has {sorted(declared)})")
            type_, opts, _required = declared[name]
            if _is_link(value):
                source = workflow[value[0]]
                returns = mappings[source["class_type"]].RETURN_TYPES
                if not 0 <= value[1] < len(returns):
                    raise WorkflowError(f"{where}: input {name!r} reads output {value[1]} of node {value[0]} "
                                        f"({source['class_type']}), which has {len(returns)} outputs")
                out_type = returns[value[1]]
                # A scalar input may be linked (ComfyUI turns a widget into a socket) from an output of its type.
                if isinstance(type_, (list, tuple)) or out_type != type_:
                    raise WorkflowError(f"{where}: input {name!r} expects {type_ if not _is_widget(type_, opts) else 'a widget value'}"
                                        f" but is linked to output {value[1]} of node {value[0]} "
                                        f"({source['class_type']}) of type {out_type}")
            elif _is_widget(type_, opts) or type_ in WIDGET_TYPES:
                _check_value(where, name, type_, opts, value)
            else:
                raise WorkflowError(f"{where}: input {name!r} of type {type_} must be linked, got {value!r}")
        missing = [n for n, (_, _, required) in declared.items() if required and n not in node["inputs"]]
        if missing:
            raise WorkflowError(f"{where}: required input(s) {missing} missing")
    return order


def execute(workflow: dict, mappings: dict) -> dict:
    """Validate, then run every node; returns {node_id: {"outputs": tuple, "ui": dict | None}}."""
    order = validate(workflow, mappings)
    results: dict[str, dict] = {}
    for node_id in order:
        node = workflow[node_id]
        cls = mappings[node["class_type"]]
        kwargs = {name: (results[value[0]]["outputs"][value[1]] if _is_link(value) else value)
                  for name, value in node["inputs"].items()}
        returned = getattr(cls(), cls.FUNCTION)(**kwargs)
        ui = None
        if isinstance(returned, dict):  # {"ui": ..., "result": (...)} as ComfyUI output nodes return
            ui, returned = returned.get("ui"), returned.get("result", ())
        returned = tuple(returned or ())
        if len(returned) != len(cls.RETURN_TYPES):
            raise WorkflowError(f"node {node_id} ({node['class_type']}) returned {len(returned)} values, "
                                f"declares {len(cls.RETURN_TYPES)}")
        results[node_id] = {"outputs": returned, "ui": ui}
    return results


def ui_to_api(ui: dict, mappings: dict) -> dict:
    """Frontend workflow → API format: widget values by the node's widget order (the value after a
    ``control_after_generate`` widget is the frontend's control mode and is dropped), links by id."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) == 4:  # notes; bypassed nodes
            continue
        if node["type"] not in mappings:
            raise WorkflowError(f"UI node {node['id']}: unknown node class {node['type']!r}")
        values = list(node.get("widgets_values", []))
        inputs = {}
        for name, (type_, opts, _required) in _declared(mappings[node["type"]]).items():
            if not _is_widget(type_, opts):
                continue
            if not values:
                raise WorkflowError(f"UI node {node['id']} ({node['type']}): no widget value for {name!r}")
            inputs[name] = values.pop(0)
            if has_control_widget(name, type_, opts):
                control = values.pop(0)
                if control not in ("fixed", "increment", "decrement", "randomize"):
                    raise WorkflowError(f"UI node {node['id']}: {control!r} after {name!r} is not a control mode")
        if values:
            raise WorkflowError(f"UI node {node['id']} ({node['type']}): {len(values)} widget values left over")
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api
