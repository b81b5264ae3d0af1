"""Drawing primitives for the phantom faces: antialiased ellipses, rings and soft bumps on a float canvas.

Why only arithmetic and square roots: the phantom dataset is versioned by DVC and a fresh clone must
regenerate byte-identical files. IEEE +, -, *, / and sqrt are exactly rounded on every CPU, while
numpy's SIMD exp/sin/pow may differ in the last bit between machines (and flip a quantised pixel).
So profiles are polynomials, rotations use the rational parametrisation of the circle, and the
random numbers come from uniform draws only (no normal(), whose ziggurat tails call exp/log).

A canvas is a float32 array (H, W, 3) with values in [0, 1]; all positions and radii are in canvas
pixels, pixel centres at i + 0.5. Every primitive touches only the bounding box of its shape.
"""

from __future__ import annotations

import dataclasses

import numpy as np

Color = tuple[float, float, float]


def rotation(t: float) -> tuple[float, float]:
    """(cos, sin) of the angle 2*atan(t), computed with exact arithmetic only (t=0: no rotation)."""
    d = 1.0 + t * t
    return (1.0 - t * t) / d, 2.0 * t / d


def _patch(canvas: np.ndarray, x: float, y: float, half: float):
    """Pixel-centre grids (dy, dx) relative to (x, y) over the clipped box of half-size ``half``."""
    h, w = canvas.shape[:2]
    x0, x1 = max(int(x - half), 0), min(int(x + half) + 2, w)
    y0, y1 = max(int(y - half), 0), min(int(y + half) + 2, h)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - x)
    dy = np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - y)
    return (slice(y0, y1), slice(x0, x1)), dy[:, None], dx[None, :]


def blend(canvas: np.ndarray, where, alpha: np.ndarray, color) -> None:
    """canvas[where] <- canvas * (1 - alpha) + color * alpha (``color`` an RGB triple or an array)."""
    a = alpha[..., None]
    region = canvas[where]
    canvas[where] = region + (np.asarray(color, dtype=np.float32) - region) * a


def _ellipse_rho(dy, dx, rx: float, ry: float, cos: float, sin: float):
    """Normalised radius rho (1 on the ellipse outline) on a local grid."""
    u = (dx * np.float32(cos) + dy * np.float32(sin)) / np.float32(rx)
    v = (dy * np.float32(cos) - dx * np.float32(sin)) / np.float32(ry)
    return np.sqrt(u * u + v * v)


def ellipse(canvas, x, y, rx, ry, color, opacity=1.0, rot=(1.0, 0.0), soft=1.0) -> None:
    """Fill an antialiased rotated ellipse (edge blurred over ``soft`` px)."""
    p = _patch(canvas, x, y, max(rx, ry) + soft + 1)
    if p is None:
        return
    where, dy, dx = p
    rho = _ellipse_rho(dy, dx, rx, ry, *rot)
    dist = (rho - 1.0) * np.float32(min(rx, ry))  # ~ signed distance to the outline, px
    alpha = np.clip(0.5 - dist / np.float32(soft), 0.0, 1.0) * np.float32(opacity)
    blend(canvas, where, alpha, color)


def ring(canvas, x, y, rx, ry, width, color, opacity=1.0, rot=(1.0, 0.0), soft=1.0) -> None:
    """Draw an antialiased elliptical outline ``width`` px thick (mask ear loops)."""
    p = _patch(canvas, x, y, max(rx, ry) + width + soft + 1)
    if p is None:
        return
    where, dy, dx = p
    rho = _ellipse_rho(dy, dx, rx, ry, *rot)
    dist = np.abs(rho - 1.0) * np.float32(min(rx, ry)) - np.float32(width / 2)
    alpha = np.clip(0.5 - dist / np.float32(soft), 0.0, 1.0) * np.float32(opacity)
    blend(canvas, where, alpha, color)


def bump(canvas, x, y, r, color, strength=1.0, flat=False) -> None:
    """A round soft blob of radius ``r`` px: profile (1-q)^2, or 1-q^2 when ``flat`` (q = d^2/r^2)."""
    p = _patch(canvas, x, y, r + 1)
    if p is None:
        return
    where, dy, dx = p
    q = np.minimum((dx * dx + dy * dy) / np.float32(r * r), 1.0)
    alpha = (1.0 - q * q) if flat else (1.0 - q) * (1.0 - q)
    blend(canvas, where, alpha * np.float32(strength), color)


@dataclasses.dataclass(frozen=True)
class Face:
    """Where a face sits on the canvas: centre (px), semi-axes a (across) and b (down) in px, rotation.

    Face features are placed in face coordinates (u, v): u = -1..1 left to right, v = -1..1 top to
    bottom of the face ellipse, so a feature at (u, v) moves and scales with the face.
    """

    cx: float  # centre x, px
    cy: float  # centre y, px
    a: float  # horizontal semi-axis, px
    b: float  # vertical semi-axis, px
    cos: float  # rotation cosine
    sin: float  # rotation sine

    def to_px(self, u: float, v: float) -> tuple[float, float]:
        """Canvas position (x, y) of the face point (u, v)."""
        x = self.cx + self.a * u * self.cos - self.b * v * self.sin
        y = self.cy + self.a * u * self.sin + self.b * v * self.cos
        return x, y

    def uv_grid(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Face coordinates (u, v) of every canvas pixel, each (H, W) float32."""
        g = np.arange(size, dtype=np.float32) + np.float32(0.5)
        dx = g[None, :] - np.float32(self.cx)
        dy = g[:, None] - np.float32(self.cy)
        c, s = np.float32(self.cos), np.float32(self.sin)
        return (dx * c + dy * s) / np.float32(self.a), (dy * c - dx * s) / np.float32(self.b)

    def ellipse(self, canvas, u, v, ru, rv, color, opacity=1.0, soft=1.0) -> None:
        """An ellipse centred at face point (u, v) with semi-axes ru*a, rv*b px, rotated with the face."""
        x, y = self.to_px(u, v)
        ellipse(canvas, x, y, ru * self.a, rv * self.b, color, opacity, (self.cos, self.sin), soft)


def coverage(signed_dist: np.ndarray, soft: float) -> np.ndarray:
    """Antialiased inside-coverage (0..1) from a signed distance in px (negative inside)."""
    return np.clip(0.5 - signed_dist / np.float32(soft), 0.0, 1.0)


def mix(c1, c2, t: float) -> Color:
    """Linear interpolation between two colours."""
    return tuple(float(a + (b - a) * t) for a, b in zip(c1, c2))


def scale(c, k) -> Color:
    """A colour multiplied channel-wise by k (a scalar or a triple), clipped to [0, 1]."""
    ks = k if isinstance(k, (tuple, list)) else (k, k, k)
    return tuple(float(min(max(a * f, 0.0), 1.0)) for a, f in zip(c, ks))


def jitter(rng: np.random.Generator, c, amount: float) -> Color:
    """A colour with each channel moved uniformly by up to +-amount."""
    d = rng.uniform(-amount, amount, 3)
    return tuple(float(min(max(a + e, 0.0), 1.0)) for a, e in zip(c, d))


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """Quantise a [0, 1] float canvas to uint8 with round-half-up (exact, platform independent)."""
    return np.floor(np.clip(canvas, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Face parts. Palettes are plausible, not calibrated; variety matters more than realism here.

SKIN_TONES: tuple[Color, ...] = (
    (0.98, 0.86, 0.76), (0.93, 0.76, 0.63), (0.82, 0.62, 0.47), (0.64, 0.45, 0.32), (0.45, 0.30, 0.21),
)
HAIR_COLORS: tuple[Color, ...] = (
    (0.08, 0.06, 0.05), (0.25, 0.15, 0.08), (0.45, 0.30, 0.15), (0.80, 0.65, 0.40), (0.55, 0.22, 0.10),
    (0.62, 0.62, 0.60),
)
IRIS_COLORS: tuple[Color, ...] = ((0.30, 0.18, 0.08), (0.25, 0.40, 0.55), (0.30, 0.45, 0.30), (0.15, 0.10, 0.06))


@dataclasses.dataclass(frozen=True)
class Look:
    """The colours and options of one face."""

    skin: Color
    hair: Color
    iris: Color
    clothes: Color
    bald: bool  # no hair drawn
    long_hair: bool  # hair falls to the shoulders


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def sample_look(rng: np.random.Generator) -> Look:
    """Random skin tone (interpolated along the palette), hair, eyes and clothes."""
    t = rng.uniform(0.0, len(SKIN_TONES) - 1.0)
    i = min(int(t), len(SKIN_TONES) - 2)
    skin = jitter(rng, mix(SKIN_TONES[i], SKIN_TONES[i + 1], t - i), 0.03)
    return Look(
        skin=skin,
        hair=jitter(rng, _pick(rng, HAIR_COLORS), 0.04),
        iris=_pick(rng, IRIS_COLORS),
        clothes=tuple(float(c) for c in rng.uniform(0.1, 0.9, 3)),
        bald=bool(rng.random() < 0.12),
        long_hair=bool(rng.random() < 0.4),
    )


def sample_face(rng: np.random.Generator, size: int) -> Face:
    """Random face ellipse (width, elongation, position, tilt up to ~10 degrees) on a size-px canvas."""
    a = size * rng.uniform(0.27, 0.33)
    cx, cy = size * rng.uniform(0.44, 0.56), size * rng.uniform(0.47, 0.54)
    b = a * rng.uniform(1.18, 1.36)
    cos, sin = rotation(rng.uniform(-0.09, 0.09))
    return Face(cx=cx, cy=cy, a=a, b=b, cos=cos, sin=sin)


def draw_background(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A two-colour linear gradient in a random direction plus a few large soft blobs."""
    size = canvas.shape[0]
    c1, c2 = (mix(rng.uniform(0.1, 0.9, 3), (0.5, 0.5, 0.5), rng.uniform(0.0, 0.6)) for _ in range(2))
    cos, sin = rotation(rng.uniform(-1.0, 1.0))
    g = (np.arange(size, dtype=np.float32) + np.float32(0.5)) / np.float32(size) - np.float32(0.5)
    t = np.clip(g[None, :] * np.float32(cos) + g[:, None] * np.float32(sin) + np.float32(0.5), 0.0, 1.0)
    canvas[:] = np.asarray(c1, np.float32) + (np.asarray(c2, np.float32) - np.asarray(c1, np.float32)) * t[..., None]
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, size, 2)
        bump(canvas, x, y, size * rng.uniform(0.15, 0.4), tuple(rng.uniform(0.1, 0.9, 3)), rng.uniform(0.2, 0.5))


def draw_head(canvas: np.ndarray, rng: np.random.Generator, face: Face, look: Look) -> np.ndarray:
    """Shoulders, neck, hair, ears and the shaded face; returns the face coverage (H, W) in 0..1."""
    size = canvas.shape[0]
    face.ellipse(canvas, 0.0, 2.1, 2.0, 0.95, look.clothes)
    face.ellipse(canvas, 0.0, 1.0, 0.48, 0.6, scale(look.skin, 0.8))
    if not look.bald:
        face.ellipse(canvas, 0.0, -0.12, 1.13, 1.0, look.hair)
        if look.long_hair:
            face.ellipse(canvas, 0.0, 0.45, 1.2, 1.1, scale(look.hair, 0.9))
    for side in (-1.0, 1.0):
        face.ellipse(canvas, side * 1.0, 0.05, 0.13, 0.2, scale(look.skin, 0.9))
    u, v = face.uv_grid(size)
    r2 = u * u + v * v
    soft = max(size / 128.0, 1.0)
    alpha = coverage((np.sqrt(r2) - 1.0) * np.float32(min(face.a, face.b)), soft)
    shade = np.float32(1.0) - np.float32(0.25) * r2 * r2
    blend(canvas, (slice(None), slice(None)), alpha, np.asarray(look.skin, np.float32) * shade[..., None])
    if not look.bald:
        line = np.float32(rng.uniform(-0.8, -0.7)) + np.float32(0.2) * u * u
        hair_alpha = coverage((v - line) * np.float32(face.b), soft) * alpha
        blend(canvas, (slice(None), slice(None)), hair_alpha, look.hair)
    return alpha


def draw_features(canvas: np.ndarray, rng: np.random.Generator, face: Face, look: Look) -> None:
    """Eyes, brows, nose and mouth at fixed face coordinates (jittered slightly)."""
    skin = look.skin
    gaze = rng.uniform(-0.04, 0.04)
    eye_v = -0.12 + rng.uniform(-0.02, 0.02)
    for s in (-1.0, 1.0):
        face.ellipse(canvas, s * 0.36, eye_v - 0.05, 0.19, 0.05, scale(skin, 0.7), 0.5)
        face.ellipse(canvas, s * 0.36, eye_v, 0.17, 0.065, (0.95, 0.93, 0.90))
        face.ellipse(canvas, s * 0.36 + gaze, eye_v, 0.075, 0.06, look.iris)
        face.ellipse(canvas, s * 0.36 + gaze, eye_v, 0.035, 0.03, (0.04, 0.03, 0.03))
        face.ellipse(canvas, s * 0.36, -0.3, 0.21, 0.035, scale(look.hair, 0.8), 0.9)
    side = 1.0 if rng.random() < 0.5 else -1.0
    face.ellipse(canvas, side * 0.07, 0.08, 0.04, 0.2, scale(skin, 0.82), 0.5)
    for s in (-1.0, 1.0):
        face.ellipse(canvas, s * 0.09, 0.3, 0.05, 0.025, scale(skin, 0.45), 0.8)
    width = rng.uniform(0.85, 1.15)
    lip = mix(skin, (0.72, 0.28, 0.30), 0.45)
    face.ellipse(canvas, 0.0, 0.53, 0.28 * width, 0.075, lip)
    face.ellipse(canvas, 0.0, 0.53, 0.27 * width, 0.012, scale(lip, 0.45), 0.9)


def finish(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """Global lighting: ambient level, a linear light gradient in a random direction, sensor noise."""
    size = canvas.shape[0]
    cos, sin = rotation(rng.uniform(-1.0, 1.0))
    if rng.random() < 0.5:
        cos, sin = -cos, -sin
    strength = np.float32(rng.uniform(0.0, 0.35))
    ambient = np.float32(rng.uniform(0.85, 1.08))
    g = (np.arange(size, dtype=np.float32) + np.float32(0.5)) / np.float32(size) - np.float32(0.5)
    light = ambient * (np.float32(1.0) + strength * (g[None, :] * np.float32(cos) + g[:, None] * np.float32(sin)))
    canvas *= light[..., None]
    canvas += (rng.random(canvas.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(0.03)


# ---------------------------------------------------------------------------------------------
# Acne lesions and face masks.

LESION_KINDS = ("comedone", "papule", "pustule", "nodule")


def draw_lesion(canvas: np.ndarray, rng: np.random.Generator, x: float, y: float, r: float, kind: str) -> None:
    """One lesion of radius ``r`` px at (x, y): comedone (dark or white dot), papule (raised red dot),
    pustule (red ring, yellow-white centre) or nodule (large dark-red blob); each with a red halo
    (erythema) except comedones. Contrast is exaggerated so lesions survive downscaling to 64 px."""
    hl = (-0.35 * r, -0.35 * r)  # highlight offset: light from the upper left
    if kind == "comedone":
        if rng.random() < 0.5:
            bump(canvas, x, y, r, jitter(rng, (0.16, 0.10, 0.08), 0.03), 0.9, flat=True)
        else:
            bump(canvas, x, y, 1.6 * r, (0.45, 0.30, 0.25), 0.35)
            bump(canvas, x, y, r, jitter(rng, (0.97, 0.95, 0.86), 0.02), 0.9, flat=True)
    elif kind == "papule":
        bump(canvas, x, y, 2.0 * r, (0.85, 0.30, 0.28), 0.35)
        bump(canvas, x, y, r, jitter(rng, (0.74, 0.13, 0.13), 0.04), 0.9, flat=True)
        bump(canvas, x + hl[0], y + hl[1], 0.4 * r, (1.0, 0.85, 0.85), 0.35)
    elif kind == "pustule":
        bump(canvas, x, y, 1.9 * r, (0.85, 0.25, 0.22), 0.5)
        bump(canvas, x, y, r, jitter(rng, (0.80, 0.16, 0.15), 0.04), 0.9, flat=True)
        bump(canvas, x, y, 0.55 * r, jitter(rng, (0.99, 0.95, 0.70), 0.02), 0.95, flat=True)
    elif kind == "nodule":
        bump(canvas, x, y, 1.6 * r, (0.70, 0.16, 0.18), 0.55)
        bump(canvas, x, y, r, jitter(rng, (0.48, 0.06, 0.09), 0.04), 0.88, flat=True)
        bump(canvas, x + hl[0], y + hl[1], 0.35 * r, (0.85, 0.50, 0.50), 0.3)
    else:
        raise ValueError(f"unknown lesion kind {kind!r}; kinds are {LESION_KINDS}")


def draw_mole(canvas: np.ndarray, rng: np.random.Generator, x: float, y: float, r: float) -> None:
    """A small brown mole: a non-acne distractor drawn on faces of every class alike."""
    bump(canvas, x, y, r, jitter(rng, (0.36, 0.23, 0.15), 0.05), 0.8, flat=True)


MASK_COLORS: tuple[Color, ...] = (
    (0.55, 0.72, 0.86), (0.93, 0.94, 0.95), (0.12, 0.12, 0.14), (0.62, 0.80, 0.72), (0.92, 0.70, 0.76),
)


def draw_beard(canvas: np.ndarray, rng: np.random.Generator, face: Face, look: Look, face_alpha) -> None:
    """A beard over the lower face (a dark lower face that is not a mask, for the mask task)."""
    u, v = face.uv_grid(canvas.shape[0])
    soft = max(canvas.shape[0] / 128.0, 1.0)
    line = np.float32(rng.uniform(0.15, 0.35)) + np.float32(0.3) * u * u
    alpha = coverage((line - v) * np.float32(face.b), soft) * face_alpha * np.float32(rng.uniform(0.6, 0.9))
    blend(canvas, (slice(None), slice(None)), alpha, look.hair)


def draw_mask(canvas: np.ndarray, rng: np.random.Generator, face: Face) -> None:
    """A surgical-mask-like shape over nose, mouth and chin: pleats, curvature shading, ear loops."""
    size = canvas.shape[0]
    soft = max(size / 128.0, 1.0)
    color = jitter(rng, _pick(rng, MASK_COLORS), 0.04)
    u, v = face.uv_grid(size)
    top = np.float32(rng.uniform(-0.05, 0.0)) + np.float32(0.12) * u * u
    outline = (np.sqrt(u * u / np.float32(1.06 * 1.06) + v * v) - np.float32(1.0)) * np.float32(min(face.a, face.b))
    alpha = coverage(np.maximum(outline, (top - v) * np.float32(face.b)), soft)
    shade = np.float32(1.0) - np.float32(0.2) * u * u
    for vp in (0.22, 0.42, 0.62):
        d = (v - np.float32(vp)) / np.float32(0.035)
        q = np.minimum(d * d, 1.0)
        shade = shade * (np.float32(1.0) - np.float32(0.16) * (np.float32(1.0) - q))
    blend(canvas, (slice(None), slice(None)), alpha, np.asarray(color, np.float32) * shade[..., None])
    loop = scale(color, 0.8)
    for s in (-1.0, 1.0):
        x, y = face.to_px(s * 1.0, 0.3)
        ring(canvas, x, y, 0.09 * face.a, 0.3 * face.b, max(size / 170.0, 1.0), loop, 0.9, (face.cos, face.sin), soft)
