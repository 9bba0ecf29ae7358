"""The decoding step's Triton kernel (``harness.models.decode_kernel``) in Triton's CPU interpreter: against
``varlen.reference_kernel`` on the slot cache's layout, and inside the engine against the masked path."""

from __future__ import annotations

import os

# Triton decides at import whether kernels are interpreted: before it is imported (this machine has no GPU)
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from harness.models import decode_kernel, varlen  # noqa: E402
from harness.models.base import BackendOptions, GenerationConfig  # noqa: E402
from harness.models.hf import load_hf_backend  # noqa: E402
from tests.models.test_engine import random_prompts  # noqa: E402
from tests.models.test_varlen import generate  # noqa: E402
from tests.models.tiny_llama import save_tiny  # noqa: E402

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")
if os.environ["TRITON_INTERPRET"] != "1":  # pragma: no cover - someone set it otherwise
    pytest.skip("Triton's interpreter is off (TRITON_INTERPRET)", allow_module_level=True)


@pytest.fixture
def interpreted(monkeypatch):
    """Kernels built for Triton's interpreter (numpy on the CPU), rebuilt as they were afterwards."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(decode_kernel, "_kernels", None)
    yield
    decode_kernel._kernels = None


@pytest.mark.parametrize("whole", [False, True], ids=["split", "one-pass"])
@pytest.mark.parametrize(("groups", "dim", "sequences"), [(1, 16, 6), (3, 16, 4), (4, 32, 2)])
def test_kernel_equals_the_reference_on_each_sequence_used_keys(interpreted, groups, dim, sequences, whole,
                                                                 monkeypatch):
    """Split and combined (few sequences), or in one pass (as many as ``TARGET_PROGRAMS``: lowered here)."""
    if whole:
        monkeypatch.setattr(decode_kernel, "TARGET_PROGRAMS", sequences)
    assert (decode_kernel.splits_for(sequences) == 1) == whole
    torch.manual_seed(groups)
    capacity = 150  # not a multiple of the tile: the last tile is partial
    k = torch.randn(sequences * capacity, 1, dim)
    v = torch.randn_like(k)
    q = torch.randn(sequences, groups, dim)
    used = torch.tensor([1, 150, 64, 65, 100, 7][:sequences], dtype=torch.int32)
    got = decode_kernel.decode_attention(q, k, v, used, capacity, dim ** -0.5)
    cu = torch.arange(sequences + 1, dtype=torch.int32)
    want = varlen.reference_kernel(q, k, v, cu, cu * capacity, used, 1, capacity, False, dim ** -0.5)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_splits_grow_while_sequences_are_few():
    assert decode_kernel.splits_for(5120) == 1  # 128 rows of a 13B model: enough programs without splitting
    assert decode_kernel.splits_for(2047) == 2
    assert decode_kernel.splits_for(501) == 8
    assert decode_kernel.splits_for(1) == 16


@pytest.fixture(scope="module")
def mqa_fp32(tmp_path_factory):
    """A random-init tiny Llama whose head size the kernel takes: 2 query heads of 16 on one kv head."""
    path = save_tiny(tmp_path_factory.mktemp("mqa-llama"), hidden=32, heads=2, kv_heads=1)
    return load_hf_backend(str(path), BackendOptions(dtype="fp32"))


def test_engine_with_the_triton_decoding_step_equals_the_masked_path(mqa_fp32, interpreted, monkeypatch):
    monkeypatch.setattr(decode_kernel, "splits_for", lambda sequences: 2)  # the interpreter runs programs one by one
    before_kernel = varlen.use_kernel(varlen.reference_kernel)  # the packed prefill
    before_choice = varlen.choose_decode_kernel("triton")
    try:
        prompts = random_prompts(6, seed=4)
        config = GenerationConfig(max_new_tokens=12, batch_size=4)
        masked, _ = generate(mqa_fp32, prompts, config, False)
        calls = []
        original = decode_kernel.decode_attention
        monkeypatch.setattr(decode_kernel, "decode_attention", lambda *a: calls.append(1) or original(*a))
        packed, run = generate(mqa_fp32, prompts, config, True)
    finally:
        varlen.use_kernel(before_kernel)
        varlen.choose_decode_kernel(before_choice)
    assert run["varlen"] and calls  # the kernel did the decoding steps
    assert packed == masked
