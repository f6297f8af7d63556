"""Tests for the S4 layer (speechbrain_s4m.lobes.s4), its kernels
(speechbrain_s4m.lobes.s4_kernel) and their HiPPO initialisation."""

from pathlib import Path

import pytest
import torch

from speechbrain_s4m.lobes import S4
from speechbrain_s4m.lobes.hippo import dplr_legs, hippo_legs
from speechbrain_s4m.lobes.s4_kernel import fft_length

MODES = ["dplr", "diag"]
PINNED = Path(__file__).resolve().parents[1] / "fixtures" / "lobe_outputs_617590d.pt"


def pinned_lobes():
    """Outputs of the lobes at commit 617590d (before the kernel module was split
    off and the CPU fast paths were removed), with their state dicts in that
    commit's naming, for fixed random weights and inputs."""
    return torch.load(PINNED, weights_only=False)


def direct_kernel(layer: S4, length: int) -> torch.Tensor:
    """Kernel by unrolling the discretised recurrence with dense matrices (float64).

    DPLR: dense A = Lambda - P P^* on the full conjugate-symmetric state, bilinear
    transform by matrix inversion. Diagonal: zero-order hold by the matrix exponential
    of the augmented matrix [[A, B], [0, 0]].
    """
    with torch.no_grad():
        kernel = layer.kernel
        dt = torch.exp(kernel.log_dt.double())
        lam = torch.complex(-torch.exp(kernel.log_neg_real.double()), kernel.imag.double())
        B = torch.view_as_complex(layer.kernel.input_matrix.double())
        C = torch.view_as_complex(layer.kernel.output_matrix.double())
        full = lambda z: torch.cat([z, z.conj()], dim=-1)  # noqa: E731
        lam, B, C = full(lam), full(B), full(C)
        H, N = lam.shape
        A = torch.diag_embed(lam)
        if layer.mode == "dplr":
            P = full(torch.view_as_complex(kernel.low_rank.double()))
            A = A - P[:, :, None] * P.conj()[:, None, :]
            eye = torch.eye(N, dtype=A.dtype)
            inverse = torch.linalg.inv(eye - dt[:, None, None] / 2 * A)
            A_bar = inverse @ (eye + dt[:, None, None] / 2 * A)
            B_bar = (inverse @ (dt[:, None] * B)[:, :, None])[:, :, 0]
        else:
            augmented = torch.zeros(H, N + 1, N + 1, dtype=A.dtype)
            augmented[:, :N, :N] = dt[:, None, None] * A
            augmented[:, :N, N] = dt[:, None] * B
            exponential = torch.linalg.matrix_exp(augmented)
            A_bar, B_bar = exponential[:, :N, :N], exponential[:, :N, N]
        taps, state = [], B_bar
        for _ in range(length):
            taps.append(torch.einsum("chn,hn->ch", C, state))
            state = (A_bar @ state[:, :, None])[:, :, 0]
        kernel = torch.stack(taps, dim=-1)
    assert kernel.imag.abs().max() < 1e-8 * kernel.real.abs().max()
    return kernel.real


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("length", [1, 2, 7, 64, 1000])
def test_kernel_matches_unrolled_recurrence(mode, bidirectional, length):
    torch.manual_seed(0)
    layer = S4(d_model=6, d_state=16, bidirectional=bidirectional, mode=mode)
    # Move away from the initial values so that every parameter matters.
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    kernel = layer.convolution_kernel(length).double()
    expected = direct_kernel(layer, length)
    assert kernel.shape == expected.shape == (2 if bidirectional else 1, 6, length)
    error = (kernel - expected).abs().max() / expected.abs().max()
    assert error < 1e-4, f"relative error {error:.2e}"


@pytest.mark.parametrize("mode", MODES)
def test_kernel_accurate_at_realistic_length_and_small_step(mode):
    torch.manual_seed(1)
    layer = S4(d_model=4, d_state=16, mode=mode, dt_min=1e-3, dt_max=2e-3)
    kernel = layer.convolution_kernel(4096).double()
    expected = direct_kernel(layer, 4096)
    error = (kernel - expected).abs().max() / expected.abs().max()
    assert error < 1e-4, f"relative error {error:.2e}"


def test_hippo_dplr_form_is_legs_in_an_eigenbasis():
    # Lambda - P P^* (with conjugates) is similar to HiPPO-LegS, whose eigenvalues
    # are -1, ..., -N (it is lower triangular).
    init = dplr_legs(8)
    full = lambda z: torch.cat([z, z.conj()])  # noqa: E731
    lam, P = full(init.eigenvalues), full(init.low_rank)
    A = torch.diag(lam) - P[:, None] * P.conj()[None, :]
    eigenvalues = torch.sort(torch.linalg.eigvals(A).real).values
    assert torch.allclose(eigenvalues, -torch.arange(8, 0, -1, dtype=torch.float64), atol=1e-6)
    # B projected on the same basis keeps its norm (the basis is unitary).
    _, B, _ = hippo_legs(8)
    assert torch.isclose(full(init.input_matrix).abs().pow(2).sum(), B.pow(2).sum())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunks", [[1] * 40, [200], [7, 1, 64, 65, 3, 60], [130, 70]])
def test_recurrence_in_chunks_reproduces_forward(mode, chunks):
    torch.manual_seed(2)
    layer = S4(d_model=5, d_state=16, bidirectional=False, mode=mode).eval()
    x = torch.randn(2, 5, sum(chunks))
    with torch.no_grad():
        expected = layer(x)
        recurrence = layer.recurrence()  # discretised once for every chunk
        state, outputs = None, []
        for chunk in x.split(chunks, dim=-1):
            y, state = layer.forward_recurrent(chunk, state, recurrence)
            outputs.append(y)
    stepped = torch.cat(outputs, dim=-1)
    error = (stepped - expected).norm() / expected.norm()
    assert error < 1e-5, f"relative error {error:.2e}"
    assert state.dtype == torch.float32 and not state.is_complex()


@pytest.mark.parametrize("mode", MODES)
def test_recurrence_stays_accurate_over_long_sequences(mode):
    torch.manual_seed(4)
    layer = S4(d_model=4, d_state=16, bidirectional=False, mode=mode).eval()
    x = torch.randn(1, 4, 5000)
    with torch.no_grad():
        expected = layer(x)
        y, _ = layer.forward_recurrent(x, None, layer.recurrence())
    assert ((y - expected).abs().max() / expected.abs().max()) < 1e-4


def test_recurrence_builds_operators_for_few_chunk_lengths():
    layer = S4(d_model=3, bidirectional=False)
    recurrence, state = layer.recurrence(), None
    with torch.no_grad():
        for length in range(1, 140, 3):  # 47 different lengths
            _, state = layer.forward_recurrent(torch.randn(1, 3, length), state, recurrence)
    assert sorted(recurrence._operators) == [1, 2, 4, 8, 16, 32, 64]


def test_recurrence_rejects_a_state_of_the_wrong_shape():
    layer = S4(d_model=4, bidirectional=False)
    with pytest.raises(ValueError, match=r"state of shape \[2, 4, 16\]"):
        layer.forward_recurrent(torch.randn(2, 4, 10), torch.zeros(2, 4, 8), layer.recurrence())


def test_recurrence_requires_unidirectional_layer():
    layer = S4(d_model=4, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional=False"):
        layer.recurrence()


@pytest.mark.parametrize("mode", MODES)
def test_every_parameter_gets_a_finite_gradient(mode):
    torch.manual_seed(3)
    layer = S4(d_model=4, d_state=16, mode=mode)
    layer(torch.randn(2, 4, 33)).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_any_length_without_changing_state():
    layer = S4(d_model=4)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    for length in [1, 3, 1000, 20000]:
        assert layer(torch.randn(1, 4, length)).shape == (1, 4, length)
    after = layer.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(list(layer.buffers())) == 0


def test_forward_is_causal_when_unidirectional():
    torch.manual_seed(4)
    layer = S4(d_model=3, bidirectional=False)
    x = torch.randn(1, 3, 50)
    changed = x.clone()
    changed[..., 30:] += 1.0
    with torch.no_grad():
        assert torch.allclose(layer(x)[..., :30], layer(changed)[..., :30], atol=1e-6)
        assert not torch.allclose(layer(x)[..., 30:], layer(changed)[..., 30:])


@pytest.mark.parametrize("mode", MODES)
def test_reset_parameters_reinitialises_every_parameter(mode):
    torch.manual_seed(5)
    layer = S4(d_model=4, mode=mode)
    initial = {k: v.clone() for k, v in layer.named_parameters()}
    with torch.no_grad():
        for p in layer.parameters():
            p.fill_(123.0)
    layer.reset_parameters()
    for name, p in layer.named_parameters():
        assert not torch.any(p == 123.0), name
    # Deterministic HiPPO parts come back exactly; random parts are redrawn in range.
    for name in ["log_neg_real", "imag", "input_matrix"] + (["low_rank"] if mode == "dplr" else []):
        assert torch.allclose(getattr(layer.kernel, name), initial["kernel." + name]), name
    dt = torch.exp(layer.kernel.log_dt)
    assert torch.all((dt >= 1e-3 * (1 - 1e-5)) & (dt <= 1e-1 * (1 + 1e-5)))


def test_low_precision_inputs_give_finite_output_of_the_same_dtype():
    torch.manual_seed(6)
    layer = S4(d_model=4)
    x = torch.randn(2, 4, 300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert torch.isfinite(y).all() and y.dtype == x.dtype
    for dtype in [torch.bfloat16, torch.float16]:
        low = S4(d_model=4).to(dtype)
        y = low(x.to(dtype))
        assert y.dtype == dtype and torch.isfinite(y).all()


def test_kernel_spectrum_stays_float32_under_autocast():
    layer = S4(d_model=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spectrum = layer.kernel_spectrum(64)
    assert spectrum.dtype == torch.complex64


@pytest.mark.parametrize(
    "shape", [(4, 100), (2, 5, 100), (2, 4, 0), (1, 2, 4, 100)], ids=["rank2", "channels", "empty", "rank4"]
)
def test_bad_input_shapes_raise_clear_errors(shape):
    layer = S4(d_model=4)
    with pytest.raises(ValueError, match=r"S4: expected input of shape \[batch, 4, time\]"):
        layer(torch.randn(*shape))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="mode"):
        S4(4, mode="nplr")
    with pytest.raises(ValueError, match="d_state"):
        S4(4, d_state=15)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("length, fft_size", [(1, 2), (7, 7), (50, 128), (997, 2000)])
def test_closed_form_spectrum_is_the_rfft_of_the_truncated_kernel(mode, length, fft_size):
    torch.manual_seed(7)
    layer = S4(d_model=3, d_state=16, mode=mode)
    with torch.no_grad():
        spectrum = layer.kernel.spectrum(length, fft_size).to(torch.complex128)
        taps = torch.fft.rfft(direct_kernel(layer, length), n=fft_size)
    error = (spectrum - taps).abs().max() / taps.abs().max()
    assert error < 1e-4, f"relative error {error:.2e}"


@pytest.mark.parametrize("name", ["S4-dplr-bi", "S4-dplr-uni", "S4-diag-bi", "S4-diag-uni"])
def test_outputs_and_state_dicts_of_commit_617590d_still_hold(name):
    """State dicts with the SSM parameters on the layer load into the split layer,
    which computes the same outputs to float32 rounding."""
    entry = pinned_lobes()[name]
    assert "log_dt" in entry["state_dict"]  # the old naming
    layer = S4(**entry["options"])
    layer.load_state_dict(entry["state_dict"])
    assert torch.equal(layer.kernel.log_dt, entry["state_dict"]["log_dt"])
    # Same order of parameters (optimizer states are matched by position).
    old_order = [name if name.startswith("output_linear") else "kernel." + name for name in entry["state_dict"]]
    assert [name for name, _ in layer.named_parameters()] == old_order
    for x, expected in entry["outputs"].values():
        with torch.no_grad():
            error = (layer(x) - expected).abs().max() / expected.abs().max()
        assert error < 1e-5, f"relative error {error:.2e}"


@pytest.mark.parametrize("mode", MODES)
def test_ssm_parameters_are_tagged_for_no_weight_decay(mode):
    layer = S4(d_model=4, mode=mode)
    tagged = {name for name, p in layer.named_parameters() if getattr(p, "_optim", None)}
    expected = {"kernel.log_dt", "kernel.log_neg_real", "kernel.imag", "kernel.input_matrix"}
    assert tagged == expected | ({"kernel.low_rank"} if mode == "dplr" else set())
    assert all(layer.get_parameter(name)._optim == {"weight_decay": 0.0} for name in tagged)


def test_training_and_inference_compute_the_same_function():
    torch.manual_seed(8)
    layer = S4(d_model=4)
    x = torch.randn(2, 4, 300)
    trained = layer.train()(x)
    with torch.no_grad():
        inferred = layer.eval()(x)
    assert torch.allclose(trained, inferred, atol=1e-6)


def test_fft_length_only_has_small_prime_factors():
    for n in [1, 2, 97, 1000, 1997, 4097]:
        m = fft_length(n)
        assert m >= n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        assert m == 1
