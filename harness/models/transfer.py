"""Host values to the device without waiting for the device.

Why: ``torch.tensor(values, device="cuda")`` and ``.to("cuda")`` of an ordinary host tensor copy from pageable
memory, after which torch synchronises the stream. Inside the engine's pipelined decoding that wait stalled
every step at which a row ended (resetting its slot's position waited for the step just launched), and each
prefill waited on its own index tensors before launching. Staged in pinned memory, the copy is queued on the
stream like a kernel and the host goes on; torch's pinned-memory allocator keeps the staging buffer until the
copy has run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def to_device(tensor: torch.Tensor, device: Any) -> torch.Tensor:
    """``tensor`` (on the host) on ``device``, queued rather than waited for where the device is a GPU."""
    import torch

    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def device_tensor(values: Sequence[Any], dtype: torch.dtype, device: Any) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)``, queued rather than waited for on a GPU."""
    import torch

    return to_device(torch.tensor(values, dtype=dtype), device)
