"""One channel-provenance handler per op family, registered in the tables of
:mod:`circuitatlas.ingest.provenance` at the bottom of this module.

What each family does to the channels:

- a convolution or linear layer makes a weight layer: its channels are its own neurons; the
  factors its input channels carry (:attr:`Provenance.scale`) are multiplied into its kernels;
- a BatchNorm right after a convolution that feeds only it is folded into that convolution;
  any other BatchNorm, LayerNorm's per-channel weight and a constant multiplier scale the
  channels; LayerNorm's normalisation itself, like every nonlinearity, counts as the identity;
- a sum or difference of two maps is a layer of its own (kind ``add``), one neuron per channel,
  with one edge from each operand's channel (the residual stream);
- a product of two maps is a gate (squeeze-excite): the channels are the larger map's;
- concatenation keeps the operands' channels, in order;
- reshapes, permutes, transposes, chunks and slices move channels: the result's channels are
  found by applying the op to the channel ids (a channel shuffle is a permutation of sources);
- pooling and means over the spatial dims keep each channel's sources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import fx, nn

from circuitatlas.analysis.folding import batchnorm_scale, fold_batchnorm_weights
from circuitatlas.errors import IngestError
from circuitatlas.ingest import ops
from circuitatlas.ingest.graphtypes import WeightLayer
from circuitatlas.ingest.provenance import Provenance, Step, Unsupported, from_ids, node_shape, register_op, run_node

if TYPE_CHECKING:
    from circuitatlas.ingest.tracestate import TraceState

__all__ = ["pointwise"]


def _tracked(step: Step) -> Provenance:
    """The first input's provenance; an op on untracked values cannot be followed."""
    if step.first is None:
        raise Unsupported(step.what)
    return step.first


def _channels_first(step: Step) -> Provenance:
    """The first input's provenance, which must have its channels on dim 1."""
    first = _tracked(step)
    if not first.canonical:
        raise Unsupported(f"{step.what} on a tensor whose channels are not on dim 1")
    return first


def _arg(node: fx.Node, position: int, name: str, default: Any = None) -> Any:
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[position] if len(node.args) > position else default


class _NotConstant(Exception):
    pass


def _value(state: "TraceState", value: Any, depth: int = 0) -> Any:
    """The value of an argument that does not depend on the input: numbers and other literals,
    parameters and buffers (``get_attr``) and ops on them only (timm's ``gamma.reshape(1, -1, 1, 1)``)."""
    if not isinstance(value, fx.Node):
        return value
    if value.name in state.prov or value.op in ("placeholder", "output") or depth > 16:
        raise _NotConstant
    if value.op == "call_module":
        raise _NotConstant
    args = fx.node.map_aggregate(value.args, lambda a: _value(state, a, depth + 1))
    kwargs = fx.node.map_aggregate(value.kwargs, lambda a: _value(state, a, depth + 1))
    found = run_node(state.root, value, args, kwargs)
    return found.detach() if isinstance(found, torch.Tensor) else found


def _value_or_none(state: "TraceState", value: Any) -> Any:
    try:
        return _value(state, value)
    except (_NotConstant, RuntimeError, TypeError, ValueError):
        return None


def _constant(state: "TraceState", value: Any) -> np.ndarray | float | None:
    """A number or a tensor that does not depend on the input (see :func:`_value`); None otherwise."""
    found = _value_or_none(state, value)
    if isinstance(found, (int, float)) and not isinstance(found, bool):
        return float(found)
    if isinstance(found, torch.Tensor) and found.is_floating_point():
        return found.double().cpu().numpy()
    return None


def _per_channel(factor: np.ndarray | float, prov: Provenance, shape: tuple[int, ...]) -> np.ndarray | float | None:
    """``factor`` as a scalar or one value per channel of a value of ``shape`` (batch dim
    included), or None when it varies along other dims too."""
    if isinstance(factor, float) or factor.size == 1:
        return float(np.asarray(factor).reshape(-1)[0])
    if prov.ids is not None:
        return None
    try:
        full = np.broadcast_to(factor, shape)[0]
    except ValueError:
        return None
    axis = full.ndim - 1 if prov.last else 0
    moved = np.moveaxis(full, axis, 0).reshape(full.shape[axis], -1)
    if not (moved == moved[:, :1]).all():
        return None
    return moved[:, 0].copy()


def pointwise(state: "TraceState", step: Step) -> Provenance:
    """Per-channel ops (nonlinearities, dropout, stochastic depth): each channel keeps its sources."""
    return _tracked(step)


def _spatial(state: "TraceState", step: Step) -> Provenance:
    """Pooling and padding: each channel keeps its sources."""
    return _channels_first(step)


def _weight(state: "TraceState", step: Step, name: str | None = None) -> Provenance:
    """Conv and linear layers: a new weight layer whose channels are its own neurons."""
    first = _tracked(step)
    name, module = name or step.node.target, step.module
    channels_last = isinstance(module, nn.Linear) and first.last and len(step.shape) == 4
    if not (first.canonical or channels_last):
        raise Unsupported(f"{step.what} on a tensor whose channels are not on dim 1 (or last, for a linear layer)")
    if isinstance(module, nn.Linear) and not channels_last and len(step.shape) != 2:
        raise Unsupported(f"{step.what} over the last dim of a channels-first map")
    state.weight_layers[name] = _weight_layer(name, module, first)
    if channels_last:  # a pointwise linear over (N, H, W, C): a 1x1 convolution
        n, h, w, c = step.shape
        state.add_layer(name, "linear", (c, h, w), step.node, channels_last=True)
        return Provenance([((name, i),) for i in range(c)], last=True)
    state.add_layer(name, "conv" if isinstance(module, nn.Conv2d) else "linear", step.shape[1:], step.node)
    return Provenance([((name, c),) for c in range(step.shape[1])])


def _linear_function(state: "TraceState", step: Step) -> Provenance:
    """``F.linear`` with a parameter as weight (timm's ``Linear``): a linear layer named after
    the module it runs in."""
    weight = _value_or_none(state, _arg(step.node, 1, "weight"))
    bias = _value_or_none(state, _arg(step.node, 2, "bias"))
    if not isinstance(weight, torch.Tensor):
        raise Unsupported("linear with a computed weight")
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    name = state.function_layer_name(step.node)
    return _weight(state, Step(step.node, step.shape, step.inputs, step.first, layer, step.what), name)


def _batchnorm(state: "TraceState", step: Step) -> Provenance:
    """Folded into the convolution before it when that convolution feeds only it; else a scale."""
    first = _channels_first(step)
    conv_node = step.inputs[0]
    if (conv_node.op == "call_module" and len(conv_node.users) == 1
            and isinstance(state.modules[conv_node.target], nn.Conv2d) and conv_node.target in state.weight_layers):
        conv = state.weight_layers[conv_node.target]
        weight, bias = fold_batchnorm_weights(torch.from_numpy(conv.weight), torch.from_numpy(conv.bias),
                                              step.module)
        conv.weight, conv.bias, conv.folded_bn = weight.numpy(), bias.numpy(), step.node.target
        return first
    bn = step.module
    if bn.running_var is None:
        raise Unsupported(f"{step.what} without running statistics")
    return first.scaled(batchnorm_scale(bn.running_var, bn.eps, bn.weight if bn.affine else None).double().numpy())


def _batchnorm_function(state: "TraceState", step: Step) -> Provenance:
    """``F.batch_norm`` in eval mode (timm's norm + activation layers): a per-channel scale."""
    first = _channels_first(step)
    node = step.node
    var, weight = _constant(state, _arg(node, 2, "running_var")), _constant(state, _arg(node, 3, "weight"))
    if _arg(node, 5, "training", False) or not isinstance(var, np.ndarray):
        raise Unsupported("batch_norm without running statistics (training mode)")
    eps = float(_arg(node, 7, "eps", 1e-5))
    w = torch.from_numpy(weight) if isinstance(weight, np.ndarray) else None
    return first.scaled(batchnorm_scale(torch.from_numpy(var), eps, w).numpy())


def _layernorm(state: "TraceState", step: Step) -> Provenance:
    """LayerNorm over the channels of each position: a per-position normaliser (the identity
    when linearised) whose per-channel weight scales the channels.

    The normaliser is the centring and the division by the std together. The centring is linear
    (``x - mean(x)``) but keeping it would join every channel to every target of the next layer
    (a depthwise conv or a residual edge would become dense); the kernel it gives is the stored
    one minus its target's mean over inputs, which a reader can take from the graph."""
    first = _tracked(step)
    node = step.node
    if step.module is not None:
        shape = tuple(step.module.normalized_shape)
        weight = (step.module.weight.detach().double().numpy()
                  if step.module.elementwise_affine and step.module.weight is not None else None)
    else:
        shape = tuple(np.atleast_1d(_arg(node, 1, "normalized_shape")))
        weight = _constant(state, _arg(node, 2, "weight"))
    channels_at_end = first.last or (first.canonical and len(step.shape) == 2)
    if not channels_at_end or shape != (len(first.channels),):
        raise Unsupported(f"{step.what} over {shape}: circuitatlas follows LayerNorm over the channels only")
    return first if weight is None else first.scaled(weight)


def _mean(state: "TraceState", step: Step) -> Provenance:
    """A mean over dims that do not hold channels (a global average pool)."""
    first = _tracked(step)
    if first.flat is not None:
        raise Unsupported(f"{step.what} of a flattened map")
    node = step.node
    in_shape = node_shape(step.inputs[0])
    dims = _arg(node, 1, "dim")
    if dims is None:
        raise Unsupported("mean over every dim")
    ndim = len(in_shape)
    dims = sorted({d % ndim for d in (dims if isinstance(dims, (list, tuple)) else [dims])})
    if 0 in dims:
        raise Unsupported("mean over the batch")
    ids = first.element_ids(in_shape[1:])
    index = tuple(slice(0, 1) if d + 1 in dims else slice(None) for d in range(ids.ndim))
    kept = ids[index]
    if not (np.broadcast_to(kept, ids.shape) == ids).all():
        raise Unsupported("mean over channels")
    if not _arg(node, 2, "keepdim", False):
        kept = kept.reshape([s for d, s in enumerate(kept.shape) if d + 1 not in dims])
    return from_ids(first, kept)


def _with_ids(first: Provenance, in_shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of ``in_shape`` (batch dim included) holding each element's channel index."""
    return torch.from_numpy(np.array(first.element_ids(in_shape[1:])))[None]


def _evaluate(state: "TraceState", step: Step) -> Any:
    """The node's op applied to the channel ids of its tracked input (its other arguments must be
    constants): what moves where."""
    first = _tracked(step)
    source = step.inputs[0]
    ids = _with_ids(first, node_shape(source))

    def swap(arg: Any) -> Any:
        if arg is source:
            return ids
        if isinstance(arg, fx.Node):
            raise Unsupported(f"{step.what} with a computed argument")
        return arg

    return run_node(state.root, step.node, fx.node.map_aggregate(step.node.args, swap),
                    fx.node.map_aggregate(step.node.kwargs, swap))


def _rearranged(state: "TraceState", step: Step) -> Provenance:
    """Permutes, transposes, squeezes, slices: the channel ids, moved the same way."""
    if _tracked(step).flat is not None:
        raise Unsupported(f"{step.what} of a flattened map")
    result = _evaluate(state, step)
    if tuple(result.shape) != step.shape:
        raise Unsupported(f"{step.what} (its result on channel ids has another shape)")
    return from_ids(step.first, result[0].numpy())


def _reshape(state: "TraceState", step: Step) -> Provenance:
    """``view``/``reshape``/``flatten``: (N, C, H, W) -> (N, C*H*W) remembers the map (a linear
    layer after it reads every position of every channel); any other reshape moves channel ids."""
    first = _tracked(step)
    in_shape = node_shape(step.inputs[0])
    if len(step.shape) == 2 and in_shape is not None and len(in_shape) == 4 and first.canonical:
        c, h, w = in_shape[1:]
        return Provenance(first.channels, flat=(c, h, w), scale=first.scale)
    if in_shape is None or in_shape[0] != step.shape[0]:
        raise Unsupported(f"{step.what} that moves the batch dim")
    if step.shape == in_shape:
        return first
    if first.flat is not None:
        raise Unsupported(f"{step.what} of a flattened map")
    return from_ids(first, first.element_ids(in_shape[1:]).reshape(step.shape[1:]))


def _split(state: "TraceState", step: Step) -> Provenance:
    """``chunk``/``split``: each piece's channels, kept for the ``getitem`` that picks it."""
    pieces = _evaluate(state, step)
    state.pieces[step.node.name] = [from_ids(step.first, p[0].numpy()) for p in pieces]
    return step.first


def _getitem(state: "TraceState", step: Step) -> Provenance:
    """One piece of a ``chunk``/``split``, or a slice of a map."""
    container, index = step.node.args[0], step.node.args[1]
    if isinstance(container, fx.Node) and container.name in state.pieces and isinstance(index, int):
        return state.pieces[container.name][index]
    return _rearranged(state, step)


def _cat(state: "TraceState", step: Step) -> Provenance:
    """Concatenation along channels: the operands' channels one after another."""
    node = step.node
    operands = node.args[0]
    dim = _arg(node, 1, "dim", 0)
    if any(not isinstance(a, fx.Node) or a.name not in state.prov for a in operands):
        raise Unsupported("cat of untracked tensors")
    provs = [state.prov[a.name] for a in operands]
    ndim = len(step.shape)
    last = provs[0].last
    channel_dim = ndim - 1 if last else 1
    if dim % ndim != channel_dim or any(p.ids is not None or p.last != last for p in provs):
        raise Unsupported(f"cat(dim={dim}) across anything but channels")
    scale = None if all(p.scale is None for p in provs) else np.concatenate([p.scales() for p in provs])
    return Provenance([s for p in provs for s in p.channels], last=last, scale=scale)


def _combine(state: "TraceState", step: Step, sign: float) -> Provenance:
    """``a + sign * b`` of two maps: an ``add`` layer, one neuron per channel, with an edge from
    each operand's channel carrying that operand's factor (1 for a plain residual)."""
    alpha = _arg(step.node, 2, "alpha", 1.0)
    if not isinstance(alpha, (int, float)):
        raise Unsupported(f"{step.what} with a computed alpha")
    if len(step.inputs) == 1:  # a map and a constant: a shift; `c - x` and alpha scale the map
        second = step.node.args[0] is not step.inputs[0]
        return step.first.scaled(sign * float(alpha)) if second and (sign != 1.0 or alpha != 1.0) else step.first
    a, b = (state.prov[n.name] for n in step.inputs)
    if a.flat is not None or b.flat is not None:
        raise Unsupported(f"{step.what} of flattened maps")
    shapes = {node_shape(n) for n in step.inputs}
    if len(step.inputs) != 2 or len(shapes) != 1 or a.ids is not None or b.ids is not None or a.last != b.last:
        raise Unsupported(f"{step.what} of tensors of different shapes or layouts")
    c = len(a.channels)
    weight = np.stack([a.scales(), sign * float(alpha) * b.scales()], axis=1).reshape(c, 2, 1, 1)
    name, value = state.sum_layer_name(step.node)
    sources = [s for i in range(c) for s in (a.channels[i], b.channels[i])]
    state.weight_layers[name] = WeightLayer(name, "add", weight.astype(np.float32), np.zeros(c, np.float32), c,
                                            sources)
    shape = (step.shape[-1], *step.shape[1:-1]) if a.last else step.shape[1:]
    state.add_layer(name, "add", shape, value, channels_last=a.last)
    return Provenance([((name, i),) for i in range(c)], last=a.last)


def _add(state: "TraceState", step: Step) -> Provenance:
    return _combine(state, step, 1.0)


def _sub(state: "TraceState", step: Step) -> Provenance:
    return _combine(state, step, -1.0)


def _product(state: "TraceState", step: Step, divide: bool) -> Provenance:
    """A map times a constant (a layer scale, 0.5) scales its channels; a map times a map is a
    gate (squeeze-excite): the channels are the larger map's, the gate adds no edges into them."""
    if not step.inputs:
        raise Unsupported(step.what)
    if len(step.inputs) > 1:  # the gated map is the operand of the output's shape (SE, CBAM)
        full = [a for a in step.inputs if node_shape(a) == step.shape]
        if not full:
            raise Unsupported(f"{step.what} of two maps neither of which has the result's shape")
        return state.prov[full[0].name]
    tracked = step.inputs[0]
    others = [a for a in step.node.args if a is not tracked]
    if divide and step.node.args[0] is not tracked:
        raise Unsupported(f"{step.what} by a map")
    factor = _constant(state, others[0]) if len(others) == 1 else None
    per_channel = _per_channel(factor, step.first, step.shape) if factor is not None else None
    if per_channel is None:  # a mask or a value computed at run time: the channels as they are
        return step.first
    return step.first.scaled(1.0 / np.asarray(per_channel) if divide else per_channel)


def _mul(state: "TraceState", step: Step) -> Provenance:
    return _product(state, step, divide=False)


def _div(state: "TraceState", step: Step) -> Provenance:
    return _product(state, step, divide=True)


def _weight_layer(name: str, module: nn.Module, source: Provenance) -> WeightLayer:
    """The layer's weights as a (out, in / groups, kh, kw) kernel, each input channel multiplied
    by the factor it carries."""
    weight = module.weight.detach().float()
    bias = module.bias.detach().float() if module.bias is not None else torch.zeros(weight.shape[0])
    if source.scale is not None:  # the factors multiplied in float64, stored as float32 like every kernel
        weight = weight.double()
    scale = torch.from_numpy(source.scales()).to(weight.dtype)
    if isinstance(module, nn.Conv2d):
        if len(source.channels) != module.in_channels:
            raise IngestError(f"{name}: expects {module.in_channels} input channels, traced {len(source.channels)}")
        g, out, per_group = module.groups, weight.shape[0], weight.shape[1]
        scaled = weight.reshape(g, out // g, per_group, *weight.shape[2:]) * scale.reshape(g, 1, per_group, 1, 1)
        return WeightLayer(name, "conv", scaled.reshape(weight.shape).float().numpy().copy(), bias.numpy().copy(), g,
                           list(source.channels))
    if source.flat is not None:
        c, h, w = source.flat
        if module.in_features != c * h * w:
            raise IngestError(f"{name}: expects {module.in_features} features, traced {c}x{h}x{w}")
        kernel = weight.reshape(-1, c, h, w) * scale.reshape(1, c, 1, 1)
        return WeightLayer(name, "linear", kernel.float().numpy().copy(), bias.numpy().copy(), 1,
                           list(source.channels))
    if len(source.channels) != module.in_features:
        raise IngestError(f"{name}: expects {module.in_features} features, traced {len(source.channels)}")
    kernel = weight.reshape(weight.shape[0], -1) * scale.reshape(1, -1)
    kernel = kernel.reshape(*kernel.shape, 1, 1).float().numpy().copy()
    return WeightLayer(name, "linear", kernel, bias.numpy().copy(), 1, list(source.channels))


# -- the tables ---------------------------------------------------------------------------------
register_op(_weight, modules=ops.WEIGHT_MODULES)
register_op(_linear_function, functions=ops.LINEAR_FUNCTIONS)
register_op(_batchnorm, modules=ops.FOLDABLE_NORM_MODULES)
register_op(_batchnorm_function, functions=ops.BATCHNORM_FUNCTIONS)
register_op(_layernorm, modules=ops.LAYERNORM_MODULES, functions=ops.LAYERNORM_FUNCTIONS)
register_op(pointwise, modules=ops.NONLINEAR_MODULES + ops.AFFINE_MODULES,
            functions=ops.NONLINEAR_FUNCTIONS | ops.AFFINE_FUNCTIONS,
            methods=ops.NONLINEAR_METHODS | ops.AFFINE_METHODS, names=ops.AFFINE_NAMES)
register_op(_spatial, modules=ops.POOL_MODULES + (nn.ZeroPad2d,), functions=ops.POOL_FUNCTIONS)
register_op(_mean, functions=ops.MEAN_FUNCTIONS, methods=ops.MEAN_METHODS)
register_op(_reshape, modules=ops.FLATTEN_MODULES, functions=ops.FLATTEN_FUNCTIONS | ops.RESHAPE_FUNCTIONS,
            methods=ops.FLATTEN_METHODS | ops.RESHAPE_METHODS)
register_op(_rearranged, functions=ops.REARRANGE_FUNCTIONS, methods=ops.REARRANGE_METHODS)
register_op(_split, functions=ops.SPLIT_FUNCTIONS, methods=ops.SPLIT_METHODS)
register_op(_getitem, functions=ops.GETITEM_FUNCTIONS)
register_op(_cat, functions=ops.CAT_FUNCTIONS, methods=ops.CAT_METHODS)
register_op(_add, functions=ops.ADD_FUNCTIONS, methods=ops.ADD_METHODS)
register_op(_sub, functions=ops.SUB_FUNCTIONS, methods=ops.SUB_METHODS)
register_op(_mul, functions=ops.MUL_FUNCTIONS, methods=ops.MUL_METHODS)
register_op(_div, functions=ops.DIV_FUNCTIONS, methods=ops.DIV_METHODS)
