"""What the machine can do and what a process holds, for the benchmarks: FLOP roofs, memory,
bf16 support."""

from __future__ import annotations

from tfblend.evaluation.machine import cpu_facts


def rss_mb(field: str) -> float:
    """This process's ``field`` of /proc/self/status (VmRSS, VmHWM) in MB (NaN if absent)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def roof_runner(kind: str):
    """``(run(n): n ops, {"flops_per_op"})`` of a roof: ``roof_matmul`` (fp32 2048 x 2048
    matmul) or ``roof_conv`` (3x3 conv 64 -> 64 on [64, 16, 32, 64])."""
    import tensorflow as tf

    if kind == "roof_matmul":
        a = tf.random.normal([2048, 2048])
        flops = 2 * 2048**3

        @tf.function
        def op():
            return tf.reduce_sum(tf.matmul(a, a))
    else:
        x = tf.random.normal([64, 16, 32, 64])
        k = tf.random.normal([3, 3, 64, 64])
        flops = 2 * 64 * 16 * 32 * 9 * 64 * 64

        @tf.function
        def op():
            return tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME"))

    def run(n):
        for _ in range(n):
            float(op())

    return run, {"flops_per_op": flops}


def cpu_bf16_flags() -> str:
    """The CPU's bf16 instruction flags ("avx512_bf16 amx_bf16"), "none", or "unknown" where
    /proc/cpuinfo cannot be read (read by :func:`tfblend.evaluation.machine.cpu_facts`, the
    reports' reader)."""
    facts = cpu_facts()
    if facts["kind"].startswith("unknown"):
        return "unknown"
    found = [flag for flag in facts["flags"] if flag in ("avx512_bf16", "amx_bf16")]
    return " ".join(found) or "none"
