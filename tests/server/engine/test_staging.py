"""Host to device through reusable staging buffers: a plain copy on the CPU."""

from __future__ import annotations

import numpy as np
import torch

from corteza.server.engine.staging import Staging


def test_on_the_cpu_staging_hands_back_the_arrays_as_tensors() -> None:
    staging = Staging(torch.device("cpu"))
    inputs = np.arange(12, dtype=np.float32).reshape(3, 4)
    labels = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    x, y, nothing = staging.stage([inputs, labels, None]).tensors()
    assert x is not None and y is not None and nothing is None
    assert torch.equal(x, torch.from_numpy(inputs))
    assert torch.equal(y, torch.from_numpy(labels))
    assert x.device.type == "cpu"
    assert staging.pinned_bytes == 0  # nothing pinned off CUDA


def test_on_the_cpu_nothing_is_copied() -> None:
    staging = Staging(torch.device("cpu"))
    inputs = np.ones((2, 3), dtype=np.float32)
    tensor = staging.to_device(inputs)
    assert tensor.data_ptr() == inputs.ctypes.data
