"""``harness.models.transfer``: host values on the device, the same values whichever way they travel."""

import pytest
import torch

from harness.models.transfer import device_tensor, to_device


def test_on_the_host_it_is_a_plain_copy():
    got = device_tensor([3, 1, 2], torch.long, "cpu")
    assert torch.equal(got, torch.tensor([3, 1, 2])) and got.dtype == torch.long
    assert torch.equal(to_device(torch.arange(4), torch.device("cpu")), torch.arange(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_queued_copy_lands_in_order():
    """The host list is freed and reused at once; the device still reads the values it was given."""
    torch.cuda.synchronize()
    busy = torch.randn(4096, 4096, device="cuda")
    for _ in range(8):
        busy = busy @ busy  # keep the stream busy so the copy is queued behind work
    got = [device_tensor(list(range(i, i + 64)), torch.long, "cuda") for i in range(32)]
    torch.cuda.synchronize()
    assert all(torch.equal(g.cpu(), torch.arange(i, i + 64)) for i, g in enumerate(got))
