"""Fusion report: what each engine really runs, counted from its own optimized graph.

For ONNX Runtime the graph is the one the session writes to ``optimized_model_filepath``; for
OpenVINO it is the compiled model's runtime (execution) graph, whose ``originalLayersNames`` say
which source ops each kernel absorbed. Counts: convolutions, BatchNormalization, standalone Add
and Relu, convolutions carrying the residual add (+ ReLU), and quantized kernels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger"}


@dataclass
class GraphCounts:
    graph: str  # e.g. "onnxruntime fp32 (ORT_ENABLE_ALL)"
    convs: int = 0
    batchnorm: int = 0
    standalone_add: int = 0
    standalone_relu: int = 0
    conv_add_relu_fused: int = 0  # one kernel: conv + residual add + ReLU
    conv_relu_fused: int = 0  # conv + ReLU (no add)
    quantized_convs: int = 0
    quantized_adds: int = 0  # residual adds that run in INT8 but as their own kernel
    residual_adds_in_source: int = 0
    is_source: bool = False  # the model before any engine optimised it
    notes: list[str] = field(default_factory=list)

    @property
    def all_residual_adds_fused(self) -> bool:
        return (
            self.standalone_add == 0
            and self.quantized_adds == 0
            and (self.conv_add_relu_fused == self.residual_adds_in_source)
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "all_residual_adds_fused": self.all_residual_adds_fused}


def source_graph(model: str | Path | onnx.ModelProto) -> dict:
    """Names of the residual Adds and the Relus of an exported (unoptimized) ONNX graph."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    return {
        "adds": [n.name for n in model.graph.node if n.op_type == "Add"],
        "relus": [n.name for n in model.graph.node if n.op_type == "Relu"],
        "convs": sum(n.op_type == "Conv" for n in model.graph.node),
        "batchnorm": sum(n.op_type == "BatchNormalization" for n in model.graph.node),
    }


def _attr(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def onnx_graph_counts(model: str | Path | onnx.ModelProto, graph: str, residual_adds: int) -> GraphCounts:
    """Counts for an ONNX graph, e.g. ORT's optimized model (NCHWc / FusedConv / QLinear* ops)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    c = GraphCounts(graph=graph, residual_adds_in_source=residual_adds)
    for node in model.graph.node:
        op = node.op_type
        if op in CONV_OPS:
            c.convs += 1
            c.quantized_convs += op in ("QLinearConv", "ConvInteger")
            activation = _attr(node, "activation")
            activation = activation.decode() if isinstance(activation, bytes) else activation
            has_sum = len(node.input) >= 4 and node.input[3] != ""  # NCHWc Conv / FusedConv "Sum"/"Z" input
            if has_sum and activation == "Relu":
                c.conv_add_relu_fused += 1
            elif activation == "Relu":
                c.conv_relu_fused += 1
        elif op == "BatchNormalization":
            c.batchnorm += 1
        elif op == "Add" and node.domain in ("", "ai.onnx"):
            c.standalone_add += 1
        elif op == "QLinearAdd":
            c.quantized_adds += 1
        elif op == "Relu":
            c.standalone_relu += 1
    if c.quantized_convs and not c.standalone_relu:
        c.notes.append("ReLU absorbed into the uint8 output range of the quantized convs")
    return c


def openvino_graph_counts(compiled, source: dict, graph: str) -> GraphCounts:
    """Counts from an OpenVINO compiled model's runtime graph, matched against the source op names."""
    c = GraphCounts(graph=graph, residual_adds_in_source=len(source["adds"]))
    add_names, relu_names = set(source["adds"]), set(source["relus"])
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = str(info["layerType"].astype(str))
        # quantized graphs rename fused ops with suffixes ("node_relu_3/fq_output_0"): compare the base name
        fused = {name.split("/")[0] for name in str(info["originalLayersNames"].astype(str)).split(",")}
        precision = str(info["runtimePrecision"].astype(str))
        if layer == "Convolution":
            c.convs += 1
            c.quantized_convs += precision in ("u8", "i8")
            has_add, has_relu = bool(fused & add_names), bool(fused & relu_names)
            c.conv_add_relu_fused += has_add and has_relu
            c.conv_relu_fused += has_relu and not has_add
        elif layer == "BatchNormalization" or "BatchNorm" in layer:
            c.batchnorm += 1
        elif layer == "Eltwise":
            c.standalone_add += bool(fused & add_names)
            c.standalone_relu += bool(fused & relu_names) and not (fused & add_names)
    return c


def format_table(rows: list[GraphCounts]) -> str:
    """A readable fixed-width table of the counts."""
    cols = [
        ("graph", "graph"),
        ("convs", "convs"),
        ("BN", "batchnorm"),
        ("Add", "standalone_add"),
        ("Relu", "standalone_relu"),
        ("conv+add+relu", "conv_add_relu_fused"),
        ("conv+relu", "conv_relu_fused"),
        ("int8 convs", "quantized_convs"),
        ("int8 adds", "quantized_adds"),
        ("adds fused", None),
    ]
    table = [[name for name, _ in cols]]
    for r in rows:
        d = r.as_dict()
        fused = "-" if r.is_source else ("yes" if r.all_residual_adds_fused else "no")
        table.append([str(d[key]) if key else fused for _, key in cols])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
