"""Procedural part-based objects: toy cars and toy chairs built from boxes and cylinders.

Conventions: world up is +z (like SRN cars); the object's front faces +x, so its left is +y. Each object
is centred on its bounding box and scaled so the box diagonal is :data:`DIAGONAL` (ShapeNet normalises
to a unit diagonal), which keeps every surface point within 0.49 of the origin: cameras at radius 1.3
with near/far 0.8/1.8 see all of it.

Part colours are drawn per object and per part from one distribution that ignores the part's identity,
so colour never gives a part away. Keypoints lie *on* visible surfaces (slightly inset from edges) so
their visibility can be decided with a z-buffer.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from featurenerf.data.synth.primitives import Cylinder, Primitive, bounds, box_from_bounds

DIAGONAL = 0.98

PART_NAMES: dict[str, tuple[str, ...]] = {
    "toycar": ("background", "body", "cabin", "wheel", "light"),
    "toychair": ("background", "seat", "back", "leg", "arm"),
}

KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "toycar": (
        "wheel_fl", "wheel_fr", "wheel_rl", "wheel_rr",
        "roof_fl", "roof_fr", "roof_rl", "roof_rr",
        "front_centre", "rear_centre", "light_l", "light_r",
    ),
    "toychair": (
        "seat_fl", "seat_fr", "seat_rl", "seat_rr",
        "leg_fl", "leg_fr", "leg_rl", "leg_rr",
        "back_l", "back_r", "arm_l", "arm_r",
    ),
}  # fmt: skip

#: For each category, the part (name) each keypoint lies on.
KEYPOINT_PARTS: dict[str, tuple[str, ...]] = {
    "toycar": ("wheel",) * 4 + ("cabin",) * 4 + ("body", "body", "light", "light"),
    "toychair": ("seat",) * 4 + ("leg",) * 4 + ("back", "back", "arm", "arm"),
}

CATEGORIES = tuple(PART_NAMES)


@dataclass(frozen=True)
class Shape:
    """One generated object: its primitives and its keypoints ``(K, 3)`` (NaN rows where absent)."""

    category: str
    primitives: tuple[Primitive, ...]
    keypoints: np.ndarray


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour from one fixed distribution (any hue, mid saturation/value, never near-white)."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.25, 0.9), rng.uniform(0.3, 0.85)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _part_colours(category: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {name: random_colour(rng) for name in PART_NAMES[category][1:]}


def _normalise(category: str, prims: list[Primitive], keypoints: np.ndarray) -> Shape:
    lo, hi = bounds(prims)
    shift = -(lo + hi) / 2
    scale = DIAGONAL / float(np.linalg.norm(hi - lo))
    prims = [p.transformed(shift, scale) for p in prims]
    return Shape(category, tuple(prims), (keypoints + shift) * scale)


def make_toycar(rng: np.random.Generator) -> Shape:
    """The default ``box`` car: body box, cabin box on top, four wheels (cylinders along y), two
    headlights. Nearly front/back symmetric: only the small headlights and a cabin offset either way tell
    the front (see :func:`make_toycar_front_back`)."""
    return _make_car(rng, front_back=False)


def make_toycar_front_back(rng: np.random.Generator) -> Shape:
    """The ``front_back`` car: a low hood in front of a taller rear body, a cabin set back on the rear body,
    four wheels (cylinders along y) and two headlights on the front face.

    Its front and back differ in silhouette from every side (hood lower than the boot, cabin behind the
    middle), as a real car's do. The default ``box`` car (:func:`make_toycar`) is nearly front/back
    symmetric, so an image barely tells a view from its half-turned opposite, which the canonical
    coordinate of ``L_coord`` needs (docs/coords.md).
    """
    return _make_car(rng, front_back=True)


def _make_car(rng: np.random.Generator, front_back: bool) -> Shape:
    # One draw order for both styles (the front_back draws replace or follow the box car's), so each
    # style's objects stay what they were when it was introduced.
    label = {n: i for i, n in enumerate(PART_NAMES["toycar"])}
    colour = _part_colours("toycar", rng)
    length, width = rng.uniform(0.85, 1.1), rng.uniform(0.38, 0.5)
    body_h, wheel_r, wheel_t = rng.uniform(0.16, 0.26), rng.uniform(0.08, 0.12), rng.uniform(0.06, 0.09)
    zb = wheel_r * rng.uniform(0.5, 0.8)  # body bottom above the ground (z = 0)
    top = zb + body_h
    # Wheels poke out of the body sides so their outer hubs are visible.
    wheel_x = length / 2 - wheel_r - rng.uniform(0.04, 0.1)
    wheel_y = width / 2 - 0.3 * wheel_t
    cab_l, cab_w = length * rng.uniform(0.4, 0.6), width * rng.uniform(0.75, 0.92)
    if front_back:
        cab_h, cab_x = rng.uniform(0.12, 0.2), -length * rng.uniform(0.06, 0.16)
        hood_top = zb + body_h * rng.uniform(0.6, 0.75)
        split_x = cab_x + cab_l / 2  # the rear body ends where the cabin does; the hood runs on to the front
        prims: list[Primitive] = [
            box_from_bounds([-length / 2, -width / 2, zb], [split_x, width / 2, top], label["body"], colour["body"]),
            box_from_bounds([split_x - 0.01, -width / 2, zb], [length / 2, width / 2, hood_top], label["body"], colour["body"]),
        ]  # fmt: skip
        front_h, front_kp = hood_top - zb, 0.3  # the front face is the hood's
    else:
        cab_h, cab_x = rng.uniform(0.12, 0.2), rng.uniform(-0.12, 0.08)
        prims = [
            box_from_bounds(
                [-length / 2, -width / 2, zb], [length / 2, width / 2, top], label["body"], colour["body"]
            )
        ]
        front_h, front_kp = body_h, 0.4
    hubs = []
    for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):  # fl, fr, rl, rr (left = +y)
        centre = np.array([sx * wheel_x, sy * wheel_y, wheel_r])
        prims.append(Cylinder(centre, 1, wheel_r, wheel_t / 2, label["wheel"], colour["wheel"]))
        hubs.append(centre + [0.0, sy * wheel_t / 2, 0.0])
    cab_top = top + cab_h
    prims.append(
        box_from_bounds(
            [cab_x - cab_l / 2, -cab_w / 2, top - 0.01],
            [cab_x + cab_l / 2, cab_w / 2, cab_top],
            label["cabin"],
            colour["cabin"],
        )
    )
    roof = [
        [cab_x + sx * 0.65 * cab_l / 2, sy * 0.65 * cab_w / 2, cab_top]
        for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1))
    ]
    light_z, light_y = zb + 0.6 * front_h, 0.32 * width
    lights = []
    for sy in (1, -1):
        lo = [length / 2 - 0.01, sy * light_y - 0.05, light_z - 0.03]
        hi = [length / 2 + 0.03, sy * light_y + 0.05, light_z + 0.03]
        prims.append(box_from_bounds(lo, hi, label["light"], colour["light"]))
        lights.append([length / 2 + 0.03, sy * light_y, light_z])
    front = [length / 2, 0.0, zb + front_kp * front_h]
    rear = [-length / 2, 0.0, zb + 0.5 * body_h]
    keypoints = np.array([*hubs, *roof, front, rear, *lights], dtype=np.float64)
    return _normalise("toycar", prims, keypoints)


def make_toychair(rng: np.random.Generator) -> Shape:
    """A chair: seat box, four cylinder legs, a back panel at -x, and (half of the time) two arm panels."""
    label = {n: i for i, n in enumerate(PART_NAMES["toychair"])}
    colour = _part_colours("toychair", rng)
    seat_w, seat_d = rng.uniform(0.4, 0.55), rng.uniform(0.38, 0.52)
    seat_t, seat_z = rng.uniform(0.04, 0.08), rng.uniform(0.3, 0.45)
    leg_r, leg_in = rng.uniform(0.025, 0.04), rng.uniform(0.0, 0.04)
    back_t, back_h, back_w = rng.uniform(0.05, 0.08), rng.uniform(0.3, 0.5), seat_w * rng.uniform(0.85, 1.0)
    has_arms = rng.uniform() < 0.5
    arm_t, arm_h, arm_gap = rng.uniform(0.04, 0.06), rng.uniform(0.12, 0.2), rng.uniform(0.0, 0.05)
    seat_top = seat_z + seat_t
    prims: list[Primitive] = [
        box_from_bounds(
            [-seat_d / 2, -seat_w / 2, seat_z],
            [seat_d / 2, seat_w / 2, seat_top],
            label["seat"],
            colour["seat"],
        )
    ]
    leg_x, leg_y = seat_d / 2 - leg_r - leg_in, seat_w / 2 - leg_r - leg_in
    leg_half = (seat_z + 0.01) / 2  # legs reach 0.01 into the seat so the joint is closed
    leg_tips = []
    corners = ((1, 1), (1, -1), (-1, 1), (-1, -1))  # fl, fr, rl, rr (front = +x, left = +y)
    for sx, sy in corners:
        centre = np.array([sx * leg_x, sy * leg_y, leg_half])
        prims.append(Cylinder(centre, 2, leg_r, leg_half, label["leg"], colour["leg"]))
        out = np.array([sx, sy, 0.0]) / np.sqrt(2)
        leg_tips.append(centre + leg_r * out + [0.0, 0.0, 0.04 - leg_half])
    back_x0 = -seat_d / 2
    back_top = seat_top + back_h
    prims.append(
        box_from_bounds(
            [back_x0, -back_w / 2, seat_top - 0.01],
            [back_x0 + back_t, back_w / 2, back_top],
            label["back"],
            colour["back"],
        )
    )
    back_kp = [[back_x0 + back_t / 2, sy * (back_w / 2 - 0.06), back_top] for sy in (1, -1)]
    # Seat corners: inset past the back panel and any arm panel so they stay on the visible seat top.
    seat_kp = [
        [(seat_d / 2 - 0.06) if sx > 0 else (back_x0 + back_t + 0.06), sy * (seat_w / 2 - 0.1), seat_top]
        for sx, sy in corners
    ]
    arm_kp: list[list[float]] = [[np.nan] * 3, [np.nan] * 3]
    if has_arms:
        arm_front = seat_d / 2 - arm_gap
        for i, sy in enumerate((1, -1)):
            y_in, y_out = sorted((sy * (seat_w / 2 - arm_t), sy * seat_w / 2))
            lo = [back_x0 + back_t - 0.01, y_in, seat_top - 0.01]
            hi = [arm_front, y_out, seat_top + arm_h]
            prims.append(box_from_bounds(lo, hi, label["arm"], colour["arm"]))
            arm_kp[i] = [arm_front - 0.03, sy * (seat_w / 2 - arm_t / 2), seat_top + arm_h]
    keypoints = np.array([*seat_kp, *leg_tips, *back_kp, *arm_kp], dtype=np.float64)
    return _normalise("toychair", prims, keypoints)


#: Builders per category and shape style; the first style of each is the default.
BUILDERS = {
    "toycar": {"box": make_toycar, "front_back": make_toycar_front_back},
    "toychair": {"default": make_toychair},
}


def shape_styles(category: str) -> tuple[str, ...]:
    """The shape styles of ``category``, the default first."""
    return tuple(BUILDERS[category])


def resolve_style(category: str, style: str | None) -> str:
    """``style`` checked against ``category``'s styles, or the category's default when None.

    Raises:
        ValueError: unknown category or style (one line naming the choices).
    """
    if category not in BUILDERS:
        raise ValueError(f"unknown synthetic category {category!r}; expected one of {', '.join(CATEGORIES)}")
    styles = shape_styles(category)
    if style is None:
        return styles[0]
    if style not in styles:
        raise ValueError(f"{category}: unknown shape style {style!r}; expected one of {', '.join(styles)}")
    return style


def make_shape(category: str, rng: np.random.Generator, style: str | None = None) -> Shape:
    """Build one random object of ``category`` (one of :data:`CATEGORIES`) in ``style`` (default: the
    category's first, :func:`shape_styles`)."""
    return BUILDERS[category][resolve_style(category, style)](rng)
