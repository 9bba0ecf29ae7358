"""The fused norm and rotary kernels (``harness.models.fused``) in Triton's CPU interpreter: each against the
transformers function it replaces, and the engine with them against the engine without, item by item.

The interpreter converts float32 to bfloat16 by its own rounding (469 of 1,000 random values differ from
torch's round-to-nearest), so bf16 results are compared within one rounding here; on a GPU the kernels round
as torch does (``benchmarks/gpu/varlen_check.py`` counts the bit-equal elements)."""

from __future__ import annotations

import os

# Triton decides at import whether kernels are interpreted: before it is imported (this machine has no GPU)
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from harness.models import fused, varlen  # noqa: E402
from harness.models.base import BackendOptions, GenerationConfig  # noqa: E402
from harness.models.hf import load_hf_backend  # noqa: E402
from tests.models.test_engine import random_prompts, shared_prompts  # noqa: E402
from tests.models.tiny_llama import save_tiny  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
if os.environ["TRITON_INTERPRET"] != "1":  # pragma: no cover - someone set it otherwise
    pytest.skip("Triton's interpreter is off (TRITON_INTERPRET)", allow_module_level=True)

modeling_llama = pytest.importorskip("transformers.models.llama.modeling_llama")


@pytest.fixture
def interpreted(monkeypatch):
    """Kernels built for Triton's interpreter, rebuilt as they were afterwards."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(fused, "_kernels", None)
    yield
    fused._kernels = None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norm_equals_llama_rms_norm(interpreted, dtype):
    torch.manual_seed(0)
    norm = modeling_llama.LlamaRMSNorm(48, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48))
    x = (torch.randn(2, 5, 48) * 4).to(dtype)
    got = fused.rms_norm(x, norm.weight, norm.variance_epsilon)
    want = norm(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    tolerance = 2 * torch.finfo(dtype).eps  # one rounding: the mean's float32 sum in another order
    torch.testing.assert_close(got, want, rtol=tolerance, atol=1e-6)


def test_norm_weight_in_float32_gives_float32_as_transformers(interpreted):
    norm = modeling_llama.LlamaRMSNorm(32)  # float32 weight, bf16 input: the product is promoted
    x = torch.randn(3, 32).to(torch.bfloat16)
    got = fused.rms_norm(x, norm.weight, norm.variance_epsilon)
    assert got.dtype == norm(x).dtype == torch.float32
    torch.testing.assert_close(got, norm(x), rtol=2 * torch.finfo(torch.bfloat16).eps, atol=1e-6)


@pytest.mark.parametrize(("dtype", "cos_batch"), [(torch.float32, 2), (torch.bfloat16, 2), (torch.bfloat16, 1)])
def test_rotary_equals_apply_rotary_pos_emb(interpreted, dtype, cos_batch):
    """Strided inputs as the attention layer makes them ([B, T, H, D] transposed); float32 bit for bit, bf16
    within the interpreter's rounding (see the module doc)."""
    torch.manual_seed(1)
    b, t, heads, k_heads, dim = 2, 3, 4, 2, 16
    q = torch.randn(b, t, heads, dim).to(dtype).transpose(1, 2)
    k = torch.randn(b, t, k_heads, dim).to(dtype).transpose(1, 2)
    angles = torch.rand(cos_batch, t, dim // 2) * 6
    cos = torch.cat([angles.cos()] * 2, -1).to(dtype)
    sin = torch.cat([angles.sin()] * 2, -1).to(dtype)
    want_q, want_k = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
    got_q, got_k = fused.rotary(q, k, cos, sin)
    if dtype == torch.float32:
        assert torch.equal(got_q, want_q) and torch.equal(got_k, want_k)
    else:
        tolerance = 4 * torch.finfo(dtype).eps  # the two products and the sum, each rounded
        torch.testing.assert_close(got_q, want_q, rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(got_k, want_k, rtol=tolerance, atol=tolerance)
    assert got_q.is_contiguous() and got_k.is_contiguous()


def test_rotary_leaves_calls_it_does_not_handle_to_the_original(interpreted):
    calls = []

    def original(q, k, cos, sin, unsqueeze_dim=1):
        calls.append(unsqueeze_dim)
        return q, k

    wrapped = fused.fused_rotary_for(original)
    q = torch.randn(1, 2, 3, 8)
    cos = torch.randn(1, 3, 8)
    wrapped(q, q, cos, cos, unsqueeze_dim=2)  # another layout
    wrapped(q, q, cos[0], cos[0])  # 2-D cos
    assert calls == [2, 1]


def test_prepare_leaves_a_norm_computed_otherwise_alone(interpreted):
    """A norm whose forward is not LlamaRMSNorm's (here Gemma's ``1 + weight``) fails the check."""

    class GemmaLikeRMSNorm(modeling_llama.LlamaRMSNorm):
        def forward(self, hidden_states):
            x = hidden_states.float()
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
            return (x * (1.0 + self.weight.float())).to(hidden_states.dtype)

    assert fused._norm_matches(modeling_llama.LlamaRMSNorm(32), torch.float32)
    assert not fused._norm_matches(GemmaLikeRMSNorm(32), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_check_accepts_the_kernel_and_refuses_another_rotation(interpreted, dtype):
    """bf16 too: the check is what lets the kernel into a bf16 model's forwards (on the GPU its first version,
    one contracted rounding off, was refused there and every step ran transformers' ten kernels)."""

    def other_direction(q, k, cos, sin, unsqueeze_dim=1):  # x * cos - rotate_half(x) * sin
        return modeling_llama.apply_rotary_pos_emb(q, k, cos, -sin, unsqueeze_dim)

    assert fused._rotary_matches(modeling_llama.apply_rotary_pos_emb, 4, 2, 16, dtype, "cpu")
    assert not fused._rotary_matches(other_direction, 4, 2, 16, dtype, "cpu")


@pytest.fixture(scope="module")
def gqa_fp32(tmp_path_factory):
    path = save_tiny(tmp_path_factory.mktemp("fused-llama"), hidden=64, heads=4, kv_heads=2)
    return load_hf_backend(str(path), BackendOptions(dtype="fp32"))


def test_prepare_finds_every_norm_and_the_rotary_function(gqa_fp32, interpreted):
    ops = fused.prepare(gqa_fp32.model)
    norms = [m for m in gqa_fp32.model.modules() if type(m).__name__ == "LlamaRMSNorm"]
    assert len(ops.norms) == len(norms) == 2 * gqa_fp32.model.config.num_hidden_layers + 1
    assert ops.rotary_modules == [modeling_llama]
    with ops.applied():
        assert modeling_llama.apply_rotary_pos_emb is not fused.fused_rotary_for  # replaced ...
        assert modeling_llama.apply_rotary_pos_emb.__wrapped__ is not None
        assert "forward" in vars(norms[0])
    assert not hasattr(modeling_llama.apply_rotary_pos_emb, "__wrapped__")  # ... and put back
    assert "forward" not in vars(norms[0])


def run(backend, prompts, config, *, use_fused, use_varlen):
    backend.fused, backend.varlen = use_fused, use_varlen
    try:
        gens = backend.generate(prompts, config)
        return [(g.text, g.finish_reason, g.tokens_out) for g in gens], dict(backend.last_run)
    finally:
        backend.fused = backend.varlen = None


@pytest.mark.parametrize("use_varlen", [False, True])
def test_engine_with_fused_kernels_equals_the_engine_without(gqa_fp32, interpreted, use_varlen, monkeypatch):
    """Greedy outputs item by item, fp32, with refills and the prefix cache; the kernels did run."""
    before = varlen.use_kernel(varlen.reference_kernel)
    try:
        prompts = random_prompts(6, seed=5) + shared_prompts(6, seed=5)
        config = GenerationConfig(max_new_tokens=10, batch_size=4)
        plain, plain_run = run(gqa_fp32, prompts, config, use_fused=False, use_varlen=use_varlen)
        calls = []
        original = fused.rotary
        monkeypatch.setattr(fused, "rotary", lambda *a: calls.append(1) or original(*a))
        with_kernels, kernel_run = run(gqa_fp32, prompts, config, use_fused=True, use_varlen=use_varlen)
    finally:
        varlen.use_kernel(before)
    assert kernel_run["fused"] and not plain_run["fused"] and calls
    layers = gqa_fp32.model.config.num_hidden_layers
    assert (kernel_run["fused_norms"], kernel_run["fused_rotary"]) == (2 * layers + 1, 1)
    assert (plain_run["fused_norms"], plain_run["fused_rotary"]) == (0, 0)
    assert with_kernels == plain
