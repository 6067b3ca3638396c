"""Soft and hard losses against dense reference computations."""

import numpy as np
import pytest
import tensorflow as tf

from tfblend.distill.losses import (
    DenseSoftCrossEntropy,
    SampledSoftCrossEntropy,
    SparseSoftCrossEntropy,
    gathered_log_probs,
    hard_cross_entropy,
)
from tfblend.errors import DataError

C, B, K = 40, 6, 7


@pytest.fixture(scope="module")
def batch():
    """Student logits, a peaked teacher distribution and its top-k, as numpy float64/32."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(B, C)).astype(np.float32)
    teacher_logits = (3.0 * rng.normal(size=(B, C))).astype(np.float32)
    p = tf.nn.softmax(teacher_logits.astype(np.float64)).numpy()
    ids = np.argsort(-p, axis=-1)[:, :K].astype(np.int32)
    probs = np.take_along_axis(p, ids, axis=-1)
    return {
        "logits": logits,
        "teacher_logits": teacher_logits,
        "p": p,
        "ids": ids,
        "probs": probs.astype(np.float32),
        "mass": probs.sum(-1).astype(np.float32),
    }


def log_softmax(x, temperature=1.0):
    z = x.astype(np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def dense_ce(target, logits, temperature=1.0):
    return -(target * log_softmax(logits, temperature)).sum(-1)


def scatter(ids, values):
    dense = np.zeros((B, C))
    np.put_along_axis(dense, ids, values, axis=-1)
    return dense


def test_hard_cross_entropy(batch):
    labels = np.arange(B) % C
    expected = -log_softmax(batch["logits"])[np.arange(B), labels]
    np.testing.assert_allclose(hard_cross_entropy(labels, batch["logits"]), expected, rtol=1e-5)


def test_gathered_log_probs(batch):
    got = gathered_log_probs(batch["logits"], batch["ids"], 2.0)
    expected = np.take_along_axis(log_softmax(batch["logits"], 2.0), batch["ids"], -1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_renormalize_equals_dense_ce_of_softened_top_k(batch, temperature):
    # The softened teacher restricted to the top-k and renormalised, built densely here.
    z = batch["teacher_logits"].astype(np.float64) / temperature
    masked = np.full_like(z, -np.inf)
    np.put_along_axis(masked, batch["ids"], np.take_along_axis(z, batch["ids"], -1), -1)
    target = np.exp(log_softmax(masked))
    target = np.nan_to_num(target)
    targets = {"ids": batch["ids"], "probs": batch["probs"]}
    got = SparseSoftCrossEntropy()(targets, batch["logits"], temperature)
    np.testing.assert_allclose(got, dense_ce(target, batch["logits"], temperature), rtol=1e-4)


def test_tails_coincide_when_k_covers_all_classes(batch):
    ids = np.argsort(-batch["p"], axis=-1).astype(np.int32)
    targets = {"ids": ids, "probs": np.take_along_axis(batch["p"], ids, -1).astype(np.float32)}
    expected = dense_ce(batch["p"], batch["logits"])
    for tail in ("renormalize", "ghost", "ignore"):
        got = SparseSoftCrossEntropy(tail)(targets, batch["logits"])
        np.testing.assert_allclose(got, expected, rtol=1e-4, err_msg=tail)


def test_ghost_is_the_ce_of_the_coarsened_distributions(batch):
    targets = {"ids": batch["ids"], "probs": batch["probs"], "mass": batch["mass"]}
    got = SparseSoftCrossEntropy("ghost")(targets, batch["logits"])
    log_s = log_softmax(batch["logits"])
    kept_s = np.take_along_axis(np.exp(log_s), batch["ids"], -1)
    expected = -(batch["probs"] * np.log(kept_s)).sum(-1) - (1 - batch["mass"]) * np.log(
        1 - kept_s.sum(-1)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # Without "mass" the kept mass is the sum of the (raw, not renormalised) probs.
    no_mass = SparseSoftCrossEntropy("ghost")(
        {"ids": batch["ids"], "probs": batch["probs"]}, batch["logits"]
    )
    np.testing.assert_allclose(no_mass, got, rtol=1e-5)


def test_ignore_drops_the_tail(batch):
    targets = {"ids": batch["ids"], "probs": batch["probs"]}
    got = SparseSoftCrossEntropy("ignore")(targets, batch["logits"])
    expected = dense_ce(scatter(batch["ids"], batch["probs"]), batch["logits"])
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_sparse_loss_builds_no_dense_target(batch):
    """The graph of the sparse loss and its gradient has no op that scatters the targets into
    [B, classes]; the only [B, classes] tensors come from the student's logits."""
    loss = SparseSoftCrossEntropy("ghost")

    def fn(logits, ids, probs):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = tf.reduce_sum(loss({"ids": ids, "probs": probs}, logits, 2.0))
        return tape.gradient(value, logits)

    graph = (
        tf.function(fn)
        .get_concrete_function(
            tf.TensorSpec([B, C]), tf.TensorSpec([B, K], tf.int32), tf.TensorSpec([B, K])
        )
        .graph
    )
    types = {op.type for op in graph.get_operations()}
    assert not types & {
        "OneHot",
        "ScatterNd",
        "TensorScatterUpdate",
        "TensorScatterAdd",
        "SparseToDense",
        "SparseTensorDenseAdd",
    }
    probs = graph.inputs[2]
    dense_from_probs = [
        op
        for op in graph.get_operations()
        if any(t is probs for t in op.inputs) and any(o.shape[-1] == C for o in op.outputs)
    ]
    assert not dense_from_probs


def draw_sampled_targets(p, draws, k, proposal, seed):
    """`draws` sampled target sets of one frame: ids [draws, k] from `proposal`, weights
    p(id) / (k proposal(id))."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(len(p), size=(draws, k), p=proposal).astype(np.int32)
    weights = (p[ids] / (k * proposal[ids])).astype(np.float32)
    return ids, weights


def softmax(x):
    return np.exp(log_softmax(x))


# Float32 rounding bound of a gradient component softmax(z)_c - p_c computed in float32 with
# C = 40 classes: exp is within 2 ulp, the sum of C terms within (C - 1) roundings and the
# division within one, so softmax(z)_c has a relative error below (C + 2) 2^-24 = 2.5e-6; p_c is
# rounded to float32 (2^-24) and the difference rounded once more. Per component the error is
# below F32_GRADIENT * (softmax(z)_c + p_c) with F32_GRADIENT = 3e-6.
F32_GRADIENT = (C + 2 + 2) * 2.0**-24 * 1.1


def test_dense_gradient_is_softmax_minus_target(batch):
    """The dense soft CE's gradient against its float64 closed form softmax(z) - p, to float32's
    rounding (F32_GRADIENT)."""
    logits = tf.constant(batch["logits"])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = tf.reduce_sum(
            DenseSoftCrossEntropy()({"probs": batch["p"].astype(np.float32)}, logits)
        )
    got = tape.gradient(loss, logits).numpy().astype(np.float64)
    s = softmax(batch["logits"])
    want = s - batch["p"]
    bound = F32_GRADIENT * (s + batch["p"])
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)


@pytest.mark.parametrize("proposal", ["teacher", "flattened"])
def test_sampled_estimate_is_unbiased(batch, proposal):
    """Averaged over many draws, the sampled loss and its gradient equal the dense soft CE and
    its gradient (the top-k renormalised loss does not).

    The reference is the float64 closed form (CE -sum p log softmax(z), gradient softmax(z) - p).
    The estimate is a mean over `draws` independent draws, so it differs from the reference by
    its Monte Carlo error: each component must lie within 5 standard errors of the mean (std of
    the per-draw values / sqrt(draws)), plus float32's rounding of a per-draw value (below
    F32_GRADIENT times the weights' and the softmax's size for the gradient; 1e-6 relative for
    the loss, whose terms are summed over k = 4 weights)."""
    p = tf.nn.softmax(batch["teacher_logits"][0].astype(np.float64) / 3.0).numpy()
    r = p if proposal == "teacher" else np.sqrt(p) / np.sqrt(p).sum()
    draws, k = 50000, 4
    ids, weights = draw_sampled_targets(p, draws, k, r, seed=1)
    logits = tf.constant(np.repeat(batch["logits"][:1], draws, axis=0))
    with tf.GradientTape() as tape:
        tape.watch(logits)
        per_draw = SampledSoftCrossEntropy()({"ids": ids, "probs": weights}, logits)
        total = tf.reduce_sum(per_draw)
    # Row d of the gradient of the sum is draw d's own gradient (its row of logits feeds only it).
    per_draw_gradient = tape.gradient(total, logits).numpy().astype(np.float64)
    per_draw = per_draw.numpy().astype(np.float64)
    s = softmax(batch["logits"][:1])[0]
    dense, dense_gradient = -(p * np.log(s)).sum(), s - p

    def within_monte_carlo_error(values, reference, float32_error):
        error = np.abs(values.mean(0) - reference)
        bound = 5 * values.std(0) / np.sqrt(draws) + float32_error
        assert np.all(error <= bound), (error, bound)

    within_monte_carlo_error(per_draw, dense, 1e-6 * np.abs(per_draw).max())
    largest_weight_sum = weights.astype(np.float64).sum(-1).max()
    within_monte_carlo_error(
        per_draw_gradient, dense_gradient, F32_GRADIENT * (s + largest_weight_sum)
    )
    standard_error = per_draw.std() / np.sqrt(draws)
    top = np.argsort(-p)[None, :k].astype(np.int32)
    top_k = SparseSoftCrossEntropy()(
        {"ids": top, "probs": p[top].astype(np.float32)}, batch["logits"][:1]
    )[0]
    assert abs(float(top_k) - dense) > 5 * standard_error


def test_sampled_refuses_other_temperatures(batch):
    with pytest.raises(ValueError, match="temperature 1"):
        SampledSoftCrossEntropy()(
            {"ids": batch["ids"], "probs": batch["probs"]}, batch["logits"], 2.0
        )


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_dense_logits_and_probs_agree_with_reference(batch, temperature):
    target = np.exp(log_softmax(batch["teacher_logits"], temperature))
    expected = dense_ce(target, batch["logits"], temperature)
    loss = DenseSoftCrossEntropy()
    from_logits = loss({"logits": batch["teacher_logits"]}, batch["logits"], temperature)
    from_probs = loss({"probs": batch["p"].astype(np.float32)}, batch["logits"], temperature)
    np.testing.assert_allclose(from_logits, expected, rtol=1e-4)
    np.testing.assert_allclose(from_probs, expected, rtol=1e-4)


def test_teacher_top1(batch):
    best = batch["p"].argmax(-1)
    sparse = {"ids": batch["ids"][:, ::-1], "probs": batch["probs"][:, ::-1]}
    np.testing.assert_array_equal(SparseSoftCrossEntropy().teacher_top1(sparse), best)
    np.testing.assert_array_equal(
        DenseSoftCrossEntropy().teacher_top1({"logits": batch["teacher_logits"]}), best
    )


def test_loss_config_round_trip():
    loss = SparseSoftCrossEntropy("ghost")
    assert SparseSoftCrossEntropy.from_config(loss.get_config()).tail == "ghost"
    with pytest.raises(ValueError, match="tail"):
        SparseSoftCrossEntropy("spread")


@pytest.mark.parametrize(
    ("ids", "probs", "message"),
    [
        ([[0, 40]], [[0.5, 0.5]], r"ids outside \[0, 40\)"),
        ([[0, -1]], [[0.5, 0.5]], r"ids outside \[0, 40\)"),
        ([[0, 1]], [[0.5, -0.1]], "finite and >= 0"),
        ([[0, 1]], [[0.5, np.nan]], "finite and >= 0"),
        ([[0, 1]], [[0.0, 0.0]], "sum to 0"),
    ],
)
def test_validation_names_the_utterance(ids, probs, message):
    targets = {
        "ids": tf.constant([[0, 1], *ids], tf.int32),
        "probs": tf.constant([[0.5, 0.5], *probs], tf.float32),
        "utt_id": tf.constant([b"good-utt", b"spk7-utt0042"]),
    }
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as error:
        SparseSoftCrossEntropy().validate(targets, num_classes=C)
    assert "spk7-utt0042" in str(error.value)
    assert "good-utt" not in str(error.value)


def test_static_validation():
    targets = {"ids": tf.zeros([2, 5], tf.int32), "probs": tf.fill([2, 5], 0.2)}
    with pytest.raises(DataError, match="k = 5 .* k = 51"):
        SparseSoftCrossEntropy().validate(targets, num_classes=C, expected_k=51)
    with pytest.raises(DataError, match="missing 'probs'"):
        SparseSoftCrossEntropy().validate({"ids": targets["ids"]}, num_classes=C)
    with pytest.raises(DataError, match="39 classes, the student has 40"):
        DenseSoftCrossEntropy().validate({"logits": tf.zeros([2, 39])}, num_classes=C)
    valid = SparseSoftCrossEntropy().validate(targets, num_classes=C, expected_k=5)
    np.testing.assert_array_equal(valid["probs"], targets["probs"])
