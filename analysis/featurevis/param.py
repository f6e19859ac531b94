"""Image parameterisations: a batch of images as a function of trainable tensors.

``fft_image`` (the default) optimises a scaled Fourier spectrum per colour channel in a
decorrelated colour space, which favours natural-looking, low-frequency images; ``pixel_image``
optimises raw pixels. Both return ``(params, image_fn)`` where ``image_fn()`` is (B, 3, H, W)
in [0, 1]. Initial noise comes from ``generator``, one draw shared by every image of the batch,
so that a batch render equals the same renders done one at a time.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["fft_image", "pixel_image", "COLOR_CORRELATION"]

# square root of the colour correlation of natural images (as used by lucid/lucent)
COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_MAX_NORM = float(COLOR_CORRELATION.norm(dim=0).max())

ImageFn = Callable[[], torch.Tensor]


def _decorrelated_to_rgb(t: torch.Tensor) -> torch.Tensor:
    matrix = (COLOR_CORRELATION / _MAX_NORM).to(t.device, t.dtype)
    return torch.einsum("bchw,dc->bdhw", t, matrix)


def _shared_noise(batch: int, shape: tuple[int, ...], sd: float, generator: torch.Generator | None,
                  device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # drawn in fp32 whatever the dtype, so that a seed starts from the same image in every precision
    one = torch.randn(1, *shape, generator=generator) * sd
    return one.expand(batch, *shape).clone().to(device=device, dtype=dtype)


def fft_image(batch: int, size: int, sd: float = 0.01, decay_power: float = 1.0,
              generator: torch.Generator | None = None, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> tuple[list[torch.Tensor], ImageFn]:
    """Fourier-space parameterisation with decorrelated colour (B images of size x size)."""
    device = torch.device(device)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    freqs = torch.sqrt(fx * fx + fy * fy)
    scale = (1.0 / torch.clamp(freqs, min=1.0 / size) ** decay_power * size).to(device=device, dtype=dtype)
    spectrum = _shared_noise(batch, (3, size, size // 2 + 1, 2), sd, generator, device, dtype).requires_grad_(True)

    def image() -> torch.Tensor:
        coeffs = torch.view_as_complex(spectrum) * scale
        spatial = torch.fft.irfft2(coeffs, s=(size, size), norm="ortho") / 4.0
        return torch.sigmoid(_decorrelated_to_rgb(spatial))

    return [spectrum], image


def pixel_image(batch: int, size: int, sd: float = 0.01, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                ) -> tuple[list[torch.Tensor], ImageFn]:
    """Plain pixels through a sigmoid."""
    device = torch.device(device)
    pixels = _shared_noise(batch, (3, size, size), sd, generator, device, dtype).requires_grad_(True)
    return [pixels], lambda: torch.sigmoid(pixels)
