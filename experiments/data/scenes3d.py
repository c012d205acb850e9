"""3-D scenes rendered analytically, for view synthesis (NeRF): coloured, diffusely shaded spheres.

``spheres_scene`` places ``num_spheres`` spheres (random centres within radius 0.9 of the origin, radii 0.3-0.6,
random saturated colours) in front of a constant grey background (0.5) and renders them by exact ray-sphere intersection with
Lambertian shading, ``c = albedo (a + (1 - a) max(0, n . l))`` (ambient ``a = 0.25``, a fixed light direction
``l``): a view-independent radiance, so a radiance field can represent it exactly.

Cameras are pinholes on a circle of radius 4 around the vertical axis, looking at the origin (field of view 40
degrees): ``num_train_views`` evenly spaced azimuths at elevations alternating 20 and 40 degrees, and
``num_test_views`` held-out azimuths halfway between training views at elevation 30 degrees. Every scene point is
between depths 2 and 6 from every camera (``baselines.nerf``'s default ``near``/``far``).

Samples are rays: inputs ``(N, 6)`` = camera origin and unit direction, targets the pixel colour ``(N, 3)`` in
``[0, 1]``; task ``regress`` (PSNR on the held-out views). Rays are ordered view by view, row by row.

Example::

    from experiments.data import create_dataset

    s = create_dataset("spheres_scene", image_size=32, num_train_views=16, num_test_views=4)
    s.train.inputs.shape, s.test.targets.shape      # (16384, 6), (4096, 3)
    images = s.test.targets.view(4, 32, 32, 3)      # the held-out views as images
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._registry import DatasetSplits, SampleSet, register_dataset

__all__ = ["camera_rays", "render_spheres", "spheres_scene"]

AMBIENT = 0.25
LIGHT = np.array([0.5, -0.4, 0.77])


def camera_rays(azimuth: float, elevation: float, *, radius: float, size: int, fov: float) -> np.ndarray:
    """Rays ``(size * size, 6)`` (origin, unit direction) of a pinhole camera at ``radius`` looking at the origin.

    Angles in degrees; ``z`` is up; row 0 is the top of the image.
    """
    az, el = math.radians(azimuth), math.radians(elevation)
    origin = radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    forward = -origin / np.linalg.norm(origin)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c = ((np.arange(size) + 0.5) / size * 2.0 - 1.0) * math.tan(math.radians(fov) / 2.0)
    v, u = np.meshgrid(c, c, indexing="ij")
    dirs = forward + u[..., None] * right - v[..., None] * up
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    dirs = dirs.reshape(-1, 3)
    return np.concatenate([np.broadcast_to(origin, dirs.shape), dirs], axis=1)


def render_spheres(rays: np.ndarray, centres: np.ndarray, radii: np.ndarray, colours: np.ndarray,
                   background: float) -> np.ndarray:
    """Colours ``(N, 3)`` of rays ``(N, 6)`` (unit directions): the nearest sphere hit, Lambertian, else background."""
    o, d = rays[:, None, :3], rays[:, None, 3:]  # (N, 1, 3)
    oc = o - centres[None]  # (N, S, 3)
    b = (oc * d).sum(-1)
    disc = b**2 - ((oc**2).sum(-1) - radii[None] ** 2)
    t = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0.0)), np.inf)
    t = np.where(t > 0, t, np.inf)
    k = t.argmin(1)
    t_hit = t[np.arange(len(rays)), k]
    hit = np.isfinite(t_hit)
    pts = rays[:, :3] + np.where(hit, t_hit, 0.0)[:, None] * rays[:, 3:]
    normal = (pts - centres[k]) / radii[k][:, None]
    light = LIGHT / np.linalg.norm(LIGHT)
    shade = AMBIENT + (1.0 - AMBIENT) * np.clip(normal @ light, 0.0, None)
    return np.where(hit[:, None], colours[k] * shade[:, None], background)


@register_dataset
def spheres_scene(
    *,
    seed: int = 0,
    image_size: int = 32,
    num_train_views: int = 16,
    num_test_views: int = 4,
    num_spheres: int = 3,
    background: float = 0.5,
) -> DatasetSplits:
    """Analytically rendered spheres seen from cameras on a circle; rays -> colours (task ``regress``).

    Args:
        seed: seed of the spheres' positions, sizes and colours.
        image_size: side of every view in pixels.
        num_train_views, num_test_views: training views and held-out views (see module docstring).
        num_spheres: spheres in the scene.
        background: the grey level behind the spheres. Mid-grey by default: on a black background (which covers
            most pixels) short NeRF runs at high learning rates often collapsed to rendering black everywhere, the
            colour sigmoid saturated at 0.
    """
    if int(image_size) < 1 or int(num_train_views) < 1 or int(num_test_views) < 1 or int(num_spheres) < 1:
        raise ValueError("image_size, num_train_views, num_test_views and num_spheres must be positive integers")
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"background must be in [0, 1], got {background}")
    rng = np.random.default_rng(seed)
    radii = rng.uniform(0.3, 0.6, size=num_spheres)
    direction = rng.normal(size=(num_spheres, 3))
    centres = direction / np.linalg.norm(direction, axis=1, keepdims=True) * rng.uniform(0.2, 0.9, (num_spheres, 1))
    hue = rng.uniform(0.0, 1.0, size=num_spheres)
    colours = np.clip(np.abs((hue[:, None] * 6.0 + np.array([0.0, 4.0, 2.0])) % 6.0 - 3.0) - 1.0, 0.0, 1.0)
    colours = 0.2 + 0.8 * colours  # saturated hues, never pure black

    def views(azimuths: np.ndarray, elevations: np.ndarray) -> SampleSet:
        rays = np.concatenate([camera_rays(a, e, radius=4.0, size=int(image_size), fov=40.0)
                               for a, e in zip(azimuths, elevations)])
        rgb = render_spheres(rays, centres, radii, colours, float(background))
        return SampleSet(inputs=torch.from_numpy(rays.astype(np.float32)),
                         targets=torch.from_numpy(rgb.astype(np.float32)))

    step = 360.0 / num_train_views
    train_az = np.arange(num_train_views) * step
    train_el = np.where(np.arange(num_train_views) % 2 == 0, 20.0, 40.0)
    test_az = (np.arange(num_test_views) * (num_train_views / num_test_views)).astype(int) * step + step / 2.0
    train, test = views(train_az, train_el), views(test_az, np.full(num_test_views, 30.0))
    mean = train.targets.mean(0)
    trivial = -10.0 * math.log10(float(((test.targets - mean) ** 2).mean()))
    return DatasetSplits(
        train=train,
        test=test,
        num_classes=3,
        in_chans=6,
        image_size=0,
        multilabel=False,
        task="regress",
        description=(
            f"{num_spheres} Lambertian spheres, {num_train_views} training / {num_test_views} held-out views of "
            f"{image_size}x{image_size}, seed={seed}; PSNR of the mean training colour on the held-out views "
            f"{trivial:.2f} dB"
        ),
    )
