"""Image parameterisations: a batch of images as a function of trainable tensors.

``fft_image`` optimises a scaled Fourier spectrum per colour channel in a decorrelated colour
space, which favours natural-looking, low-frequency images; ``maco_image`` (after MACO, Fel et
al. 2023) keeps that spectrum's magnitude fixed at natural images' 1/f fall-off and optimises only
the phases, so no frequency can grow out of proportion; ``pixel_image`` optimises raw pixels.
Both return ``(params, image_fn)`` where ``image_fn()`` is (B, 3, H, W)
in [0, 1]. Initial noise comes from ``generator``, one draw shared by every image of the batch,
so that a batch render equals the same renders done one at a time.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["fft_image", "maco_image", "pixel_image", "PARAMETERISATIONS", "COLOR_CORRELATION"]

# square root of the colour correlation of natural images (as used by lucid/lucent)
COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_MAX_NORM = float(COLOR_CORRELATION.norm(dim=0).max())

ImageFn = Callable[[], torch.Tensor]


def _decorrelated_to_rgb(t: torch.Tensor) -> torch.Tensor:
    matrix = (COLOR_CORRELATION / _MAX_NORM).to(t.device, t.dtype)
    return torch.einsum("bchw,dc->bdhw", t, matrix)


def _rgb_to_decorrelated(t: torch.Tensor) -> torch.Tensor:
    matrix = torch.linalg.inv((COLOR_CORRELATION / _MAX_NORM).double()).to(t.device, t.dtype)
    return torch.einsum("bchw,dc->bdhw", t, matrix)


def _logits(init: torch.Tensor, device: torch.device, dtype: torch.dtype, margin: float = 0.02) -> torch.Tensor:
    """The pre-sigmoid values of starting images in [0, 1] (kept ``margin`` off 0 and 1, where
    the sigmoid would stop passing gradients)."""
    return torch.logit(init.to(device=device, dtype=dtype).clamp(margin, 1 - margin))


def _shared_noise(batch: int, shape: tuple[int, ...], sd: float, generator: torch.Generator | None,
                  device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # drawn in fp32 whatever the dtype, so that a seed starts from the same image in every precision
    one = torch.randn(1, *shape, generator=generator) * sd
    return one.expand(batch, *shape).clone().to(device=device, dtype=dtype)


def fft_image(batch: int, size: int, sd: float = 0.01, decay_power: float = 1.0,
              generator: torch.Generator | None = None, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32, init: torch.Tensor | None = None
              ) -> tuple[list[torch.Tensor], ImageFn]:
    """Fourier-space parameterisation with decorrelated colour (B images of size x size),
    starting from noise of ``sd``, plus the images ``init`` (B, 3, size, size) when given."""
    device = torch.device(device)
    scale = (1.0 / _frequencies(size) ** decay_power * size).to(device=device, dtype=dtype)
    spectrum = _shared_noise(batch, (3, size, size // 2 + 1, 2), sd, generator, device, dtype)
    if init is not None:
        spatial = 4.0 * _rgb_to_decorrelated(_logits(init, device, dtype))
        spectrum = spectrum + torch.view_as_real(torch.fft.rfft2(spatial, norm="ortho") / scale)
    spectrum.requires_grad_(True)

    def image() -> torch.Tensor:
        coeffs = torch.view_as_complex(spectrum) * scale
        spatial = torch.fft.irfft2(coeffs, s=(size, size), norm="ortho") / 4.0
        return torch.sigmoid(_decorrelated_to_rgb(spatial))

    return [spectrum], image


def _frequencies(size: int) -> torch.Tensor:
    """|f| (cycles per pixel) of an rfft2 spectrum of a size x size image, floored at 1/size."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return torch.clamp(torch.sqrt(fx * fx + fy * fy), min=1.0 / size)


def maco_image(batch: int, size: int, sd: float = 0.01, decay_power: float = 1.0,
               generator: torch.Generator | None = None, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, init: torch.Tensor | None = None
               ) -> tuple[list[torch.Tensor], ImageFn]:
    """Magnitude-constrained Fourier parameterisation: per decorrelated colour channel, a fixed
    1/f**decay_power magnitude and trainable phases; each channel is standardised before the
    sigmoid, so the image's contrast is the spectrum's, not the optimiser's. ``sd`` scales the
    initial phases' spread around a shared random draw (phases start uniform, as in MACO)."""
    device = torch.device(device)
    magnitude = (1.0 / _frequencies(size) ** decay_power).to(device=device, dtype=dtype)
    magnitude[0, 0] = 0.0  # the mean stays grey; only the pattern is optimised
    one = torch.rand(1, 3, size, size // 2 + 1, generator=generator) * 2 * torch.pi
    phase = one.expand(batch, -1, -1, -1).clone().to(device=device, dtype=dtype)
    if init is not None:
        phase = torch.angle(torch.fft.rfft2(_rgb_to_decorrelated(_logits(init, device, dtype)), norm="ortho"))
    phase.requires_grad_(True)

    def image() -> torch.Tensor:
        coeffs = torch.polar(magnitude.expand_as(phase), phase)
        spatial = torch.fft.irfft2(coeffs, s=(size, size), norm="ortho")
        spatial = spatial / spatial.std(dim=(2, 3), keepdim=True).clamp(min=1e-8)
        return torch.sigmoid(_decorrelated_to_rgb(spatial))

    return [phase], image


def pixel_image(batch: int, size: int, sd: float = 0.01, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                init: torch.Tensor | None = None) -> tuple[list[torch.Tensor], ImageFn]:
    """Plain pixels through a sigmoid, from noise of ``sd`` plus the images ``init`` when given."""
    device = torch.device(device)
    pixels = _shared_noise(batch, (3, size, size), sd, generator, device, dtype)
    if init is not None:
        pixels = pixels + _logits(init, device, dtype)
    pixels.requires_grad_(True)
    return [pixels], lambda: torch.sigmoid(pixels)


PARAMETERISATIONS = {"fft": fft_image, "maco": maco_image, "pixel": pixel_image}
