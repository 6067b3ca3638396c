"""Count the FLOPs of a model by walking its traced TensorFlow graph.

Only the dense linear algebra is counted: MatMul, BatchMatMul, Conv2D and the two Conv2D
backprops, at 2 FLOPs per multiply-add. These are the operations a matmul/conv roof applies to
and, for every model in `tfblend.models`, more than 95% of the arithmetic; element-wise work
(bias, batch norm, activations, softmax) is left out, so rates computed from these counts are
slight underestimates of the work done.

Only operations the function's outputs depend on are counted (TensorFlow prunes the others at
run time), nested function calls are followed, and loop bodies are counted once per iteration:
the trip count is read from the graph when it is a constant, else taken from `loop_trips` (Keras'
RNN layers loop once per time step, so for a recurrent model on `[T, D]` pass `loop_trips=T`).
"""

import numpy as np
import tensorflow as tf

_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
_WHILE_OPS = ("While", "StatelessWhile")
_IF_OPS = ("If", "StatelessIf")


def _dims(tensor):
    shape = tensor.shape
    if shape.rank is None or None in shape.as_list():
        raise ValueError(
            f"cannot count FLOPs of {tensor.name}: shape {shape} is not fully known; "
            "trace with a fully defined input shape"
        )
    return shape.as_list()


def _op_flops(op):
    """FLOPs of one linear-algebra op (0 for every other op)."""
    if op.type == "MatMul":
        k = _dims(op.inputs[0])[0 if op.get_attr("transpose_a") else 1]
        return 2 * int(np.prod(_dims(op.outputs[0]))) * k
    if op.type in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        k = _dims(op.inputs[0])[-2 if op.get_attr("adj_x") else -1]
        return 2 * int(np.prod(_dims(op.outputs[0]))) * k
    if op.type == "Conv2D":
        kh, kw, cin, _ = _dims(op.inputs[1])
        return 2 * int(np.prod(_dims(op.outputs[0]))) * kh * kw * cin
    if op.type == "Conv2DBackpropInput":  # inputs: input_sizes, filter, out_backprop
        kh, kw, cin, _ = _dims(op.inputs[1])
        return 2 * int(np.prod(_dims(op.inputs[2]))) * kh * kw * cin
    if op.type == "Conv2DBackpropFilter":  # inputs: input, filter_sizes, out_backprop
        kh, kw, cin, _ = _dims(op.outputs[0])
        return 2 * int(np.prod(_dims(op.inputs[2]))) * kh * kw * cin
    return 0


def _function_graph(graph, name):
    function = graph._get_function(name)
    if function is None or getattr(function, "graph", None) is None:
        raise ValueError(f"cannot find the graph of function {name!r}")
    return function.graph


def _live_ops(graph, outputs):
    """Ops reachable backwards from `outputs` (tensors or ops) through data and control edges."""
    stack = [t if isinstance(t, tf.Operation) else t.op for t in outputs]
    seen = {}
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen[op.name] = op
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return list(seen.values())


def graph_flops(graph, outputs=None, loop_trips=None):
    """Linear-algebra FLOPs to compute `outputs` (default: the graph's outputs and control
    outputs) of a `FuncGraph`, following nested calls, conditionals (the larger branch) and
    loops (trip count from the graph if constant, else `loop_trips`; ValueError if neither)."""
    if outputs is None:
        outputs = [*graph.outputs, *graph.control_outputs]
    total = 0
    for op in _live_ops(graph, outputs):
        total += _op_flops(op)
        if op.type in _CALL_OPS:
            total += graph_flops(_function_graph(graph, op.get_attr("f").name), None, loop_trips)
        elif op.type in _IF_OPS:
            total += max(
                graph_flops(_function_graph(graph, op.get_attr(branch).name), None, loop_trips)
                for branch in ("then_branch", "else_branch")
            )
        elif op.type in _WHILE_OPS:
            # while_v2 loop variables start with (loop counter, maximum iterations).
            trips = tf.get_static_value(op.inputs[1])
            trips = loop_trips if trips is None or trips < 0 else int(trips)
            if trips is None:
                raise ValueError(
                    f"loop {op.name} has no constant trip count; pass loop_trips to count it"
                )
            body = _function_graph(graph, op.get_attr("body").name)
            total += trips * graph_flops(body, None, loop_trips)
    return total


def forward_flops(model, input_shape, dtype=tf.float32, loop_trips=None):
    """Forward-pass FLOPs of one call of `model` on an input of shape `input_shape`.

    Args:
        model: a `keras.Model` taking a single float tensor.
        input_shape: the full input shape, batch axis included: `(1, 2W+1, D)` for the FLOPs
            of one context window (= one frame of a window model), `(1, T, D)` for one
            utterance of a sequence model (divide by T for a per-frame figure).
        loop_trips: iterations of loops whose trip count is not a graph constant (T for a
            recurrent model on `(1, T, D)`).
    Returns:
        int, FLOPs of the call.
    """
    spec = tf.TensorSpec(list(input_shape), dtype)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return graph_flops(concrete.graph, loop_trips=loop_trips)


def train_step_flops(model, input_shape, dtype=tf.float32, loop_trips=None):
    """FLOPs of one training step's forward and backward passes on a batch of `input_shape`
    (batch axis included): sparse softmax cross-entropy against integer labels (one per output
    frame), gradients for every trainable variable.

    The count is read from the gradient graph TensorFlow builds, so it is exact for the linear
    algebra (about 3x the forward count; the first layer needs no input gradient).

    Args:
        model: a `keras.Model` mapping `[B, ...]` to logits `[B, classes]` (windows) or
            `[B, L, classes]` (dense chunks).
        input_shape: e.g. `(256, 21, 40)` or `(8, 84, 40)`; the count scales with the batch.
        loop_trips: the trip count of loops without a constant one (a recurrent model on
            `[B, T, D]`: T; its forward and backward loops both run T times).
    Returns:
        int, FLOPs of the step (divide by the output frames, B or B x L, for a per-frame figure).
    """
    label_shape = list(model.compute_output_shape(tuple(input_shape))[:-1])

    def step(x, labels):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        return tape.gradient(loss, model.trainable_variables)

    concrete = tf.function(step).get_concrete_function(
        tf.TensorSpec(list(input_shape), dtype), tf.TensorSpec(label_shape, tf.int32)
    )
    return graph_flops(concrete.graph, loop_trips=loop_trips)


def frame_flops(model, feature_dim, chunk=64, training=False):
    """FLOPs per output frame of a time-valid model (one with a `receptive_field`) on its two
    paths, forward only or (`training`) forward + backward of a training step.

    - "window": one window `[1, R, D]` (R = receptive field) per output frame; each window
      recomputes the convolutions of all its R context frames.
    - "dense": what one chunk `[1, chunk + R - 1, D]` of `chunk` output frames computes,
      divided by `chunk`; the context frames at the chunk's edges are the only overhead.

    Returns:
        {"window": float, "dense": float}, FLOPs per output frame.
    """
    field = model.receptive_field
    count = train_step_flops if training else forward_flops
    return {
        "window": count(model, (1, field, feature_dim)) / 1.0,
        "dense": count(model, (1, chunk + field - 1, feature_dim)) / chunk,
    }
