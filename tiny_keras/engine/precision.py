"""The precision a run computes in, settled once when it first starts.

A recipe's precision is "float32", "mixed_float16", "mixed_bfloat16" or "auto". "auto" is
made concrete for the machine where the run starts (:func:`auto_precision`) and written to
the run's ``recipe.json``; a session that continues the run keeps it, wherever it runs
(:func:`settle`), since it changes the arithmetic.
"""
from tiny_keras import backend

# Backends whose CPU path is measured to gain from bfloat16 on a CPU with bfloat16
# instructions: TensorFlow's oneDNN kernels. Bare model.fit of the papers' main models, 2
# cores: 1.5-3.8x over float32 on an Intel Xeon with AMX-BF16, 1.4-1.8x on an AMD EPYC with
# AVX512-BF16 and no AMX (docs/benchmarks.md). JAX's and PyTorch's CPU paths are not
# measured, so "auto" keeps float32 on them.
BFLOAT16_CPU_BACKENDS = (backend.TENSORFLOW,)
BFLOAT16_CPU_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}  # /proc/cpuinfo flag: its name


def auto_precision(compute_capability=None, cpu_flags=frozenset(), backend_name=None):
    """``(precision, reason)``: what "auto" precision picks on a machine whose GPU has
    ``compute_capability`` (None: no GPU) and whose CPU has the ``/proc/cpuinfo`` flags
    ``cpu_flags``, on Keras backend ``backend_name`` (default: this process's).

    A GPU of compute capability 8.0 and up computes in bfloat16, an older one in float16.
    A CPU with bfloat16 instructions (AMX-BF16 or AVX512-BF16: :data:`BFLOAT16_CPU_FLAGS`)
    gets bfloat16 where the backend's CPU path is measured to use them
    (:data:`BFLOAT16_CPU_BACKENDS`); any other CPU float32 (bfloat16 is emulated there)."""
    backend_name = backend_name or backend.name()
    if compute_capability is not None:
        capability = ".".join(str(v) for v in compute_capability)
        if tuple(compute_capability) >= (8, 0):
            return "mixed_bfloat16", f"a GPU of compute capability {capability} computes in bfloat16"
        return "mixed_float16", f"a GPU of compute capability {capability} (below 8.0) has no fast bfloat16"
    found = [name for flag, name in BFLOAT16_CPU_FLAGS.items() if flag in cpu_flags]
    if not found:
        return "float32", "a CPU without bfloat16 instructions (no amx_bf16 or avx512_bf16 flag)"
    if backend_name in BFLOAT16_CPU_BACKENDS:
        return "mixed_bfloat16", f"a CPU with {found[0]}, which {backend_name}'s CPU kernels (oneDNN) use"
    return "float32", (f"a CPU with {found[0]}, but bfloat16 on the {backend_name} backend's CPU path is not "
                       "measured (pass --precision mixed_bfloat16 to try it)")


def settle(requested, started=None, compute_capability=None, cpu_flags=frozenset()):
    """``(precision, reason)`` for a session asked for ``requested`` precision, of a run that
    ``started`` in a precision (None: a new run): "auto" keeps the precision a run started
    in, else picks :func:`auto_precision`'s; a precision asked for by name is that one (a
    run folder holding another precision is then another run's, and refused)."""
    kept = f"the precision the run started in ({started}; a run keeps it)"
    if requested == "auto":
        if started not in (None, "auto"):
            return started, kept
        precision, reason = auto_precision(compute_capability, cpu_flags)
        return precision, f"auto: {reason}"
    return requested, kept if started == requested else "chosen (--precision, or the recipe's)"
