"""The embedded default corpus: a mini SoccerNet and a mini DeepSportRadar, drawn from a seed.

`ensure_synthetic(data_dir, seed)` returns DATA_DIR/synthetic-v2-seed{seed}/ (generated once,
then reused; written to a temporary folder and renamed, so a killed run never leaves half a
corpus). `write_synthetic(root, seed)` writes it unconditionally. Same seed -> identical
Labels-v2.json, identical COCO json and PNGs, identical decoded video frames.

soccernet/<league>/<season>/<game>/{1,2}_224p.mkv + Labels-v2.json
    64 games x 2 halves x 32 s by default: event-dense halves (15 events each, ~2 s apart),
    not whole matches. Video as SoccerNet's 224p: 398x224, 25 fps, H.264 (libx264 fed NV12, its
    own layout; decodes as yuv420p; preset ultrafast, CRF 23, a keyframe every 2 s). A
    broadcast-like view of a pitch (mowing stripes, white markings drawn with a mild
    perspective, goals with nets, corner flags, crowd and advertising boards) that pans and
    sometimes cuts to a 2x close-up; 22 players in two kits, goalkeepers, referee, two assistant
    referees with flags and a fourth official, all as small people-like sprites (head, shirt,
    shorts, legs, arms, shadow) and a ball. Between events: ordinary play (passes, dribbles,
    lobbed balls; formations that shift with the ball). Each game draws its own pitch tint,
    stripes, crowd, boards, kits, referee kit and camera moves, so frames are not memorizable
    across games. Labels-v2.json in the real schema (UrlLocal, UrlYoutube, gameHomeTeam,
    gameAwayTeam, gameDate, gameScore, annotations[gameTime, label, position (ms as a string),
    team, visibility]). Events are spaced EVENT_SPACING_S apart (+- a jitter that keeps scenes
    apart); every game has each of the 17 classes at least once (so every split by game has all
    17), extras are balanced across classes. For +-BLEND_S around an event the scene blends in
    (smoothstep from the smoothed ordinary play), and for +-HOLD_S it holds exactly, the class's
    own arrangement (see CLASS_SIGNATURES); `position` is the middle of the hold.
deepsportradar/trainvaltest.json + <ARENA>/<game>/camcourt{1,2}_<timestamp>_0.png
    13 arenas x 34 images by default, 640x480 PNG (the real ones are 1624x1234 or larger:
    smaller here to stay light), laid out like the challenge's files. A basketball court seen by
    an elevated side camera (a pinhole projection): wooden planks, painted keys, lines, hoops,
    advertising boards and crowd, all in arena-specific colours; 8-13 people (two teams,
    referees, sometimes a coach on the sideline) drawn as people-like shapes with true
    instance masks (occlusion-aware), COCO RLE (pycocotools), category "human" (id 0).

Why these default sizes: the probe sets split by game and by arena with the default seeded
rules (soccernet.split_games 0.7/0.15/0.15, deepsportradar.split_arenas 0.2 test / 0.15 valid).
64 games -> 44 train / 10 valid / 10 test games; x 30 events -> 1,320 / 300 / 300 events.
13 arenas -> 8 / 2 / 3 arenas; x 34 images -> 272 / 68 / 102 frames. Fewer games or arenas
would hold out fewer units: round(0.15 n) >= 10 needs n >= 64, round(0.2 n) >= 3 needs n >= 13.
Video: 4,096 s (102,400 frames); a frame store at one frame every 1 s holds 4,096 frames, every
2 s 2,048. Cost (2 cores): see write_synthetic.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from sportray.config import SOCCER_CLASSES
from sportray.storage import pid_alive

VERSION = "synthetic-v2"
DEFAULTS = dict(n_games=64, half_s=32.0, n_arenas=13, images_per_arena=34, image_size=(640, 480))
FPS = 25
W, H = 398, 224                      # SoccerNet 224p frame
EVENT_SPACING_S = 2.0                # target spacing of events within a half
BLEND_S, HOLD_S = 0.8, 0.4           # scene blends in over |t - te| in [HOLD_S, BLEND_S]

# What each class looks like (the probe frame is the middle of the hold). Kept here so the
# docs, the report and the renderer agree.
CLASS_SIGNATURES = {
    "Penalty": "ball on the penalty spot, one kicker behind it, goalkeeper on the goal line, "
               "everyone else lined up outside the box; camera on that goal",
    "Kick-off": "ball on the centre spot with two players over it, both teams in two formation "
                "blocks in their own halves outside the centre circle; camera on the centre",
    "Goal": "ball in the net, goalkeeper lying on the ground, a tight group of celebrating "
            "attackers (arms up) near the box corner, defenders standing; sometimes a close-up",
    "Substitution": "fourth official at the far touchline on the halfway line holding up a black "
                    "board with red and green numbers, one player walking off, a substitute "
                    "waiting; camera up on the halfway line, often a close-up",
    "Offside": "straight line of four defenders, one attacker with the ball beyond it, assistant "
               "referee on the far touchline with the flag raised",
    "Shots on target": "shooter in the box, ball in flight toward the goal mouth, goalkeeper "
                       "diving in the air toward it",
    "Shots off target": "shooter at the edge of the box, ball going wide of the post or over the "
                        "bar, goalkeeper standing with arms out",
    "Clearance": "a defender near his own box with the ball high in the air above (big ball, "
                 "shadow on the grass), attackers pressing",
    "Ball out of play": "ball beyond a touchline (on the boards/track), players stopped near the "
                        "line, assistant referee with the flag held out sideways",
    "Throw-in": "a player just outside a touchline with both arms up and the ball over his head, "
                "four players in front on the pitch",
    "Foul": "two players (one per team) lying on the grass, the referee next to them with an "
            "arm raised, players converging; often a close-up",
    "Indirect free-kick": "ball still in midfield with a kicker next to it, referee with one arm "
                          "straight up, no wall, attackers and defenders paired in a line near the box",
    "Direct free-kick": "ball 18-28 m from goal, a wall of 4-5 defenders at 9 m with a white "
                        "spray line at their feet, kicker behind the ball, goalkeeper in goal",
    "Corner": "ball at the corner flag with a kicker beside it, a crowd of both teams in the "
              "six-yard/penalty box, goalkeeper on his line",
    "Yellow card": "referee with one arm up holding a yellow card, the offender standing in front "
                   "of him, players watching; mostly a close-up",
    "Red card": "referee with one arm up holding a red card, the offender walking away toward "
                "the touchline, two team-mates protesting at the referee; mostly a close-up",
    "Yellow->red card": "referee with both arms up holding a yellow card in one hand and a red "
                        "card in the other, the offender walking away; mostly a close-up",
}

# per-class probability of a 2x close-up camera during the hold (broadcast style)
_ZOOM_P = {"Yellow card": 0.7, "Red card": 0.7, "Yellow->red card": 0.7, "Goal": 0.4, "Foul": 0.5,
           "Substitution": 0.7, "Throw-in": 0.2, "Clearance": 0.1, "Ball out of play": 0.1}

# ----------------------------------------------------------------------------- geometry
PITCH_L, PITCH_W = 105.0, 68.0
WORLD_W, WORLD_H = 920, 256           # world image at zoom 1 (the camera pans over it)
X0, Y0 = 40.0, 44.0                   # world px of the far-left pitch corner
SX, SY = 8.0, 192.0 / 68.0            # px per metre along the length / across (foreshortened)
PLAYER_PX = 19.0                      # sprite height of a player on the near touchline, zoom 1
PX_PER_M_UP = PLAYER_PX / 1.85        # upright px per metre (heights, ball in the air)

# actor indices
HOME, AWAY = list(range(0, 11)), list(range(11, 22))     # [0] and [11] are goalkeepers
REF, LIN_FAR, LIN_NEAR, FOURTH, SUB = 22, 23, 24, 25, 26
N_ACTORS = 27

# poses
STAND, RUN_A, RUN_B, ARMS_UP, ARM_UP, ARMS_OUT, LYING, DIVE = range(8)


def _depth(y):
    return 0.82 + 0.18 * (np.asarray(y, dtype=np.float64) / PITCH_W)


def to_px(x, y, z: int = 1):
    """Metres on the pitch (x along, y across from the far touchline) -> world px at zoom z."""
    k = _depth(y)
    px = (X0 + (PITCH_L / 2 + (np.asarray(x, np.float64) - PITCH_L / 2) * k) * SX) * z
    py = (Y0 + np.asarray(y, np.float64) * SY) * z
    return px, py, k


def _yuv(rgb) -> np.ndarray:
    """RGB -> Y'CbCr BT.601 limited range (what decoders assume for untagged yuv420p)."""
    rgb = np.asarray(rgb, np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return np.clip(np.stack([y, u, v], -1).round(), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- sprites

def _half_res(idx: np.ndarray) -> np.ndarray:
    """Index sprite at chroma resolution (2x2 blocks; first non-empty of a fixed order)."""
    h, w = idx.shape
    p = np.zeros((h + h % 2, w + w % 2), idx.dtype)
    p[:h, :w] = idx
    a = p[1::2, 1::2]
    for b in (p[0::2, 0::2], p[0::2, 1::2], p[1::2, 0::2]):
        a = np.where(a > 0, a, b)
    return np.ascontiguousarray(a)


def _seg_dist(u, v, p, q):
    (x1, y1), (x2, y2) = p, q
    dx, dy = x2 - x1, y2 - y1
    t = np.clip(((u - x1) * dx + (v - y1) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    return np.hypot(u - (x1 + t * dx), v - (y1 + t * dy)), t


_SHOULDER = 0.17
_ARMS = {  # (left hand, right hand) in body units (u right, v down; feet at v=1)
    STAND: ((-0.21, 0.47), (0.21, 0.47)),
    RUN_A: ((-0.10, 0.44), (0.26, 0.40)),
    RUN_B: ((-0.26, 0.40), (0.10, 0.44)),
    ARMS_UP: ((-0.25, -0.17), (0.25, -0.17)),
    ARM_UP: ((-0.21, 0.47), (0.21, -0.19)),
    ARMS_OUT: ((-0.40, 0.25), (0.40, 0.25)),
}
_LEGS = {
    RUN_A: (((-0.05, 0.64), (-0.18, 0.97)), ((0.05, 0.64), (0.13, 0.97))),
    RUN_B: (((-0.05, 0.64), (-0.13, 0.97)), ((0.05, 0.64), (0.18, 0.97))),
}
_STRAIGHT_LEGS = (((-0.065, 0.64), (-0.07, 0.97)), ((0.065, 0.64), (0.07, 0.97)))


@dataclass(frozen=True)
class Sprite:
    idx: np.ndarray        # uint8 palette indices, 0 = transparent
    half: np.ndarray       # the same at chroma resolution
    ay: int                # anchor (feet / ground point) row and column inside idx
    ax: int
    hands: tuple = ()      # ((dy, dx) left, (dy, dx) right) from the anchor, px
    key: tuple = ()        # cache key (kind, size, pose)


@functools.lru_cache(maxsize=4096)
def _person(h: int, pose: int) -> Sprite:
    """A person h px tall (feet to top of head). Palette: 1 skin 2 shirt 3 shorts 4 socks
    5 hair 6 boots 7 shadow."""
    if pose in (LYING, DIVE):
        base = _person(h, STAND if pose == LYING else ARMS_UP)
        body = base.idx[:base.ay + 1].copy()
        body[body == 7] = 0
        rows = np.nonzero(body.any(axis=1))[0]
        body = body[rows[0]:rows[-1] + 1]
        rot = np.rot90(body, 1)
        if pose == LYING:
            rot = rot[::2]
        rot = np.ascontiguousarray(rot)
        return Sprite(rot, _half_res(rot), rot.shape[0] - 1, rot.shape[1] // 2, (), ("p", h, pose))
    top = int(np.ceil(0.24 * h))
    below = max(2, int(round(0.06 * h)))
    hg, wg = top + h + below, int(np.ceil(0.9 * h)) + 2
    v = (np.arange(hg)[:, None] + 0.5 - top) / h
    u = (np.arange(wg)[None, :] + 0.5 - wg / 2) / h
    idx = np.zeros((hg, wg), np.uint8)
    px = 1.0 / h
    # shadow on the grass
    idx[((u / 0.27) ** 2 + ((v - 1.0) / (0.045 + 1.2 * px)) ** 2) <= 1] = 7
    # legs: skin, socks, boots
    legs = _LEGS.get(pose, _STRAIGHT_LEGS)
    lw = max(0.038, 0.55 * px)
    for p, q in legs:
        d, t = _seg_dist(u, v, p, q)
        on = d <= lw
        idx[on & (v < 0.78)] = 1
        idx[on & (v >= 0.78)] = 4
        boot = (d <= lw + 0.012) & (v >= 0.93) & (v <= 1.0)
        idx[boot] = 6
    # shorts and shirt
    idx[(v >= 0.52) & (v < 0.67) & (np.abs(u) <= 0.15)] = 3
    half_w = 0.17 - 0.05 * np.clip((v - 0.17) / 0.35, 0, 1)
    idx[(v >= 0.17) & (v < 0.53) & (np.abs(u) <= half_w)] = 2
    # arms: sleeve then skin
    aw = max(0.034, 0.5 * px)
    hands = []
    for side, hand in zip((-1, 1), _ARMS.get(pose, _ARMS[STAND])):
        shoulder = (side * _SHOULDER, 0.21)
        d, t = _seg_dist(u, v, shoulder, hand)
        on = d <= aw
        idx[on & (t < 0.35)] = 2
        idx[on & (t >= 0.35)] = 1
        hands.append(((hand[1] - 1.0) * h, hand[0] * h))
    # head and hair
    head = ((u / 0.075) ** 2 + ((v - 0.085) / 0.085) ** 2) <= 1 + 0.6 * px
    idx[head] = 1
    idx[head & (v < 0.055)] = 5
    ay, ax = top + h, wg // 2
    return Sprite(idx, _half_res(idx), ay, ax, tuple(hands), ("p", h, pose))


@functools.lru_cache(maxsize=512)
def _item(kind: str, h: int) -> Sprite:
    """Small objects, scaled with the player height h. Anchor = bottom centre (hand or ground)."""
    s = h / PLAYER_PX
    if kind == "card":                      # 1 = card colour (palette per use)
        w, hh = max(3, round(3.2 * s)), max(4, round(4.4 * s))
        idx = np.ones((hh, w), np.uint8)
    elif kind == "board":                   # 1 black 2 red 3 green 4 frame: "OUT | IN" numbers
        w, hh = max(12, round(12 * s)), max(7, round(7.5 * s))
        idx = np.full((hh, w), 1, np.uint8)
        idx[0, :] = idx[-1, :] = idx[:, 0] = idx[:, -1] = 4
        m = w // 2
        idx[2:-2, 2:m:2] = 2                # red "digits" on the left (player off)
        idx[2:-2, m + 1:-1:2] = 3           # green "digits" on the right (player on)
    elif kind == "flag":                    # 1 yellow 2 red, checkered, on a stick (3)
        w, hh = max(3, round(4 * s)), max(3, round(3.4 * s))
        idx = np.zeros((hh + max(1, round(2 * s)), w + 1), np.uint8)
        yy, xx = np.mgrid[0:hh, 0:w]
        idx[:hh, 1:] = np.where((yy // max(1, hh // 2) + xx // max(1, w // 2)) % 2 == 0, 1, 2)
        idx[:, 0] = 3
    elif kind == "ball":                    # 1 white 2 grey
        d = max(3, round(3.2 * s))
        yy, xx = np.mgrid[0:d, 0:d] + 0.5 - d / 2
        on = (yy ** 2 + xx ** 2) <= (d / 2) ** 2 + 0.3
        idx = np.where(on, 1, 0).astype(np.uint8)
        idx[on & (yy + xx > d * 0.25)] = 2
    elif kind == "ball_big":                # ball high in the air: closer to the camera
        d = max(5, round(5.5 * s))
        yy, xx = np.mgrid[0:d, 0:d] + 0.5 - d / 2
        on = (yy ** 2 + xx ** 2) <= (d / 2) ** 2 + 0.3
        idx = np.where(on, 1, 0).astype(np.uint8)
        idx[on & (yy + xx > d * 0.3)] = 2
    elif kind == "shadow":                  # 3 dark
        w, hh = max(4, round(5 * s)), max(2, round(2 * s))
        yy, xx = np.mgrid[0:hh, 0:w] + 0.5
        on = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - hh / 2) / (hh / 2)) ** 2 <= 1.2
        idx = np.where(on, 3, 0).astype(np.uint8)
    elif kind == "spray":                   # 1 white dot
        d = max(1, round(1.2 * s))
        idx = np.ones((d, d), np.uint8)
    else:
        raise ValueError(kind)
    return Sprite(idx, _half_res(idx), idx.shape[0] - 1, idx.shape[1] // 2, (), ("i", kind, h))


class _Painter:
    """Paints index sprites into the planes of one NV12 frame: Y (H, W) and interleaved UV
    (H/2, W: U, V, U, V, ...), the layout x264 works in, so the encoder converts nothing.

    A sprite coloured with a palette is cached (per palette key) as full-res Y values and
    interleaved half-res UV values with their masks, and as flat offsets into the planes: a
    sprite wholly inside the frame (most of them) is painted by two indexed stores, one cut by
    the frame's edge by two masked copies of its visible part.
    """

    def __init__(self, stride_y: int, stride_uv: int):
        self.sy, self.suv = stride_y, stride_uv
        self.Y = self.UV = self.Yf = self.UVf = None
        self.cache: dict = {}

    def set_planes(self, y_flat: np.ndarray, uv_flat: np.ndarray) -> None:
        """The frame's planes as flat buffers (rows of stride_y / stride_uv bytes)."""
        self.Yf, self.UVf = y_flat, uv_flat
        self.Y = y_flat.reshape(-1, self.sy)[:, :W]
        self.UV = uv_flat.reshape(-1, self.suv)[:, :W]

    def _prepare(self, sprite: Sprite, pal: np.ndarray):
        m = sprite.idx > 0
        mh = np.repeat(sprite.half > 0, 2, axis=1)
        yv = pal[sprite.idx, 0]
        uv = np.stack([pal[sprite.half, 1], pal[sprite.half, 2]], -1).reshape(mh.shape[0], -1)
        r, c = np.nonzero(m)
        rh, ch = np.nonzero(mh)
        return (m, mh, yv, uv, (r * self.sy + c).astype(np.intp), yv[m],
                (rh * self.suv + ch).astype(np.intp), uv[mh])

    def blit(self, sprite: Sprite, pal: np.ndarray, pal_key, fy: float, fx: float) -> None:
        """Paint the sprite with its anchor on frame px (fy, fx). pal: (K, 3) Y'CbCr uint8."""
        key = (sprite.key, pal_key)
        c = self.cache.get(key)
        if c is None:
            c = self.cache[key] = self._prepare(sprite, pal)
        m, mh, yv, uv, off_y, val_y, off_uv, val_uv = c
        y0 = math.floor(fy + 0.5) - sprite.ay
        x0 = math.floor(fx + 0.5) - sprite.ax
        ph, pw = self.Y.shape
        h, w = m.shape
        if y0 >= 0 and x0 >= 0 and y0 + h <= ph and x0 + w <= pw:
            # wholly inside (then so is its chroma: H and W are even)
            self.Yf[y0 * self.sy + x0 + off_y] = val_y
            self.UVf[(y0 >> 1) * self.suv + ((x0 >> 1) << 1) + off_uv] = val_uv
            return
        ys, xs = (y0 if y0 > 0 else 0), (x0 if x0 > 0 else 0)
        ye, xe = min(ph, y0 + h), min(pw, x0 + w)
        if ys >= ye or xs >= xe:
            return
        np.copyto(self.Y[ys:ye, xs:xe], yv[ys - y0:ye - y0, xs - x0:xe - x0],
                  where=m[ys - y0:ye - y0, xs - x0:xe - x0])
        y0, x0 = y0 >> 1, (x0 >> 1) << 1         # chroma row; interleaved column (even)
        h, w = mh.shape
        ys, xs = (y0 if y0 > 0 else 0), (x0 if x0 > 0 else 0)
        ye, xe = min(ph >> 1, y0 + h), min(pw, x0 + w)
        if ys >= ye or xs >= xe:
            return
        np.copyto(self.UV[ys:ye, xs:xe], uv[ys - y0:ye - y0, xs - x0:xe - x0],
                  where=mh[ys - y0:ye - y0, xs - x0:xe - x0])


# ----------------------------------------------------------------------------- game style

_KITS = [(235, 235, 235), (110, 170, 230), (30, 40, 110), (40, 80, 200), (120, 25, 50),
         (240, 130, 30), (110, 50, 150), (25, 25, 25), (235, 120, 170), (20, 140, 140),
         (200, 30, 35), (235, 210, 40), (150, 150, 160), (90, 200, 220)]
_GK_KITS = [(170, 230, 60), (240, 240, 90), (120, 120, 120), (250, 150, 40), (60, 220, 220),
            (200, 60, 200)]
_SKIN = [(240, 200, 170), (225, 175, 135), (190, 135, 95), (140, 95, 65), (95, 65, 45)]
_HAIR = [(30, 20, 15), (70, 45, 25), (150, 110, 60), (20, 20, 20), (210, 180, 120)]
YELLOW_CARD, RED_CARD = (250, 215, 0), (220, 20, 30)


@dataclass
class _Style:
    grass: np.ndarray
    stripe: float
    stripe_m: float
    line: tuple
    crowd_pal: np.ndarray
    crowd: np.ndarray            # (WORLD_H//2, WORLD_W//2) palette indices
    boards: list
    flag_colour: tuple
    palettes: np.ndarray         # (N_ACTORS, 8, 3) Y'CbCr


def _kit_distance(a, b):
    return float(np.abs(np.subtract(a, b)).sum())


def _make_style(rng: np.random.Generator) -> _Style:
    green = np.array([rng.uniform(35, 75), rng.uniform(105, 150), rng.uniform(30, 70)])
    line = tuple(int(c) for c in rng.uniform(225, 255, 3))
    crowd_pal = np.clip(rng.uniform(20, 90, (6, 3)) + rng.uniform(0, 60, (6, 1)), 0, 255)
    crowd_pal[rng.integers(0, 6)] = rng.uniform(120, 230, 3)       # fans' colour
    cg = rng.integers(0, 6, (WORLD_H // 2, WORLD_W // 2))
    cg = np.where(rng.random(cg.shape) < 0.55, np.roll(cg, 1, axis=1), cg)   # blobs, not noise
    boards, x = [], 0
    while x < WORLD_W:
        w = int(rng.integers(50, 110))
        boards.append((x, w, tuple(int(c) for c in rng.uniform(10, 250, 3)),
                       tuple(int(c) for c in rng.uniform(10, 250, 3))))
        x += w
    # kits: two teams far enough apart, goalkeepers different from both
    while True:
        a, b = rng.choice(len(_KITS), 2, replace=False)
        if _kit_distance(_KITS[a], _KITS[b]) > 180:
            break
    gks = rng.choice(len(_GK_KITS), 2, replace=False)
    ref_shirt = [(20, 20, 20), (20, 20, 20), (60, 30, 90), (230, 230, 70)][rng.integers(0, 4)]
    shadow = green * 0.55
    pals = np.zeros((N_ACTORS, 8, 3))
    for i in range(N_ACTORS):
        team = 0 if i in HOME else 1 if i in AWAY else 0 if i == SUB else 2
        if team < 2:
            shirt = np.array(_KITS[(a, b)[team]], float)
            if i in (0, 11):
                shirt = np.array(_GK_KITS[gks[team]], float)
            shorts = (shirt * 0.45) if (i + team) % 3 == 0 else np.array(
                [(235, 235, 235), (25, 25, 40)][int(shirt.mean() > 128)], float)
            if i == SUB:   # substitute: team kit under a training bib of the other shade
                shorts = shirt * 0.6
            socks = shirt
        else:
            shirt = np.array(ref_shirt, float)
            shorts = np.array((20, 20, 20), float)
            socks = np.array((20, 20, 20), float)
        pals[i] = [(0, 0, 0), _SKIN[rng.integers(0, len(_SKIN))], shirt, shorts, socks,
                   _HAIR[rng.integers(0, len(_HAIR))], (15, 15, 15), shadow]
    return _Style(green, float(rng.uniform(6, 16)), float(rng.choice([5.25, 7.0, 8.75])), line,
                  crowd_pal, cg, boards,
                  [(255, 200, 0), (255, 120, 0), (230, 40, 40), (240, 110, 200)][rng.integers(0, 4)],
                  _yuv(pals))


def _world(style: _Style, z: int) -> tuple[np.ndarray, np.ndarray]:
    """The static world image (stands, boards, pitch, markings, goals) at zoom z -> Y and
    interleaved UV (NV12 layout)."""
    from PIL import Image, ImageDraw

    img = np.zeros((WORLD_H * z, WORLD_W * z, 3), np.float32)
    board_end = _paint_stands(img, style, z)
    _paint_grass(img, style, z, board_end)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    pen = _PitchPen(ImageDraw.Draw(pil), z, style.line)
    # drawn in this order: later strokes cover earlier ones where they cross
    _draw_markings(pen)
    _draw_goals(pen)
    _draw_corner_flags(pen, style.flag_colour)
    return _nv12(np.asarray(pil))


def _paint_stands(img: np.ndarray, style: _Style, z: int) -> int:
    """Crowd in tiers, then a row of advertising boards; returns the first row below them."""
    stand_end, board_end = int((Y0 - 10) * z), int((Y0 - 3) * z)
    crowd = style.crowd_pal[style.crowd].repeat(2 * z, 0).repeat(2 * z, 1)
    img[:stand_end] = crowd[:stand_end]
    img[:stand_end][(np.arange(stand_end) // z) % 9 == 8] *= 0.55           # tiers
    for x, w, c1, c2 in style.boards:
        img[stand_end:board_end, x * z:(x + w) * z] = c1
        img[stand_end + 2 * z:board_end - 2 * z, (x + 8) * z:(x + w - 8) * z:3 * z] = c2  # "text"
    return board_end


def _paint_grass(img: np.ndarray, style: _Style, z: int, board_end: int) -> None:
    """Grass with mowing stripes (they follow the perspective) and a far-to-near brightness
    gradient, from board_end down."""
    rows = np.arange(board_end, img.shape[0])
    y_m = (rows / z - Y0) / SY
    cols = np.arange(img.shape[1]) / z
    k = _depth(np.clip(y_m, -5, 75))[:, None]
    x_m = ((cols[None, :] / SX - X0 / SX) - PITCH_L / 2) / k + PITCH_L / 2
    light = np.floor(x_m / style.stripe_m) % 2 == 0
    shade = (0.88 + 0.12 * np.clip(y_m, 0, 68) / 68)[:, None]
    row_light = ((style.grass[None, :] + style.stripe) * shade).astype(np.float32)   # per row
    row_dark = ((style.grass[None, :] - style.stripe) * shade).astype(np.float32)
    img[board_end:] = np.where(light[..., None], row_light[:, None, :], row_dark[:, None, :])


class _PitchPen:
    """Draws on the world image (a PIL ImageDraw) at zoom z with points given in pitch metres."""

    def __init__(self, draw, z: int, colour: tuple):
        self.draw, self.z, self.colour = draw, z, colour
        self.lw = max(1, z)                      # line width in px

    def at(self, x, y) -> tuple[float, float]:
        px, py, _ = to_px(x, y, self.z)
        return float(px), float(py)

    def poly(self, pts, closed: bool = False) -> None:
        pts = [self.at(x, y) for x, y in pts]
        if closed:
            pts.append(pts[0])
        self.draw.line(pts, fill=self.colour, width=self.lw)

    def circle(self, cx, cy, r, a0: float = 0.0, a1: float = 360.0, n: int = 64) -> None:
        a = np.radians(np.linspace(a0, a1, n))
        self.poly(list(zip(cx + r * np.cos(a), cy + r * np.sin(a))))

    def spot(self, x, y, rx: float, ry: float) -> None:
        """A filled ellipse of rx x ry line widths (foreshortened: ry < rx)."""
        px, py = self.at(x, y)
        lw = self.lw
        self.draw.ellipse([px - rx * lw, py - ry * lw, px + rx * lw, py + ry * lw], fill=self.colour)


def _draw_markings(pen: _PitchPen) -> None:
    L, Wd = PITCH_L, PITCH_W
    pen.poly([(0, 0), (L, 0), (L, Wd), (0, Wd)], closed=True)
    pen.poly([(L / 2, 0), (L / 2, Wd)])
    pen.circle(L / 2, Wd / 2, 9.15)
    for sx, sgn in ((0.0, 1), (L, -1)):           # each end: boxes, the arc, the penalty spot
        pen.poly([(sx, 13.84), (sx + sgn * 16.5, 13.84), (sx + sgn * 16.5, 54.16), (sx, 54.16)])
        pen.poly([(sx, 24.84), (sx + sgn * 5.5, 24.84), (sx + sgn * 5.5, 43.16), (sx, 43.16)])
        spot = sx + sgn * 11
        a = np.degrees(np.arccos(5.5 / 9.15))    # the arc outside the penalty box only
        pen.circle(spot, Wd / 2, 9.15, -a if sgn > 0 else 180 - a, a if sgn > 0 else 180 + a, 24)
        pen.spot(spot, Wd / 2, 1, 0.7)
    pen.spot(L / 2, Wd / 2, 1.5, 1)
    for cx, cy, a0 in ((0, 0, 0), (L, 0, 90), (L, Wd, 180), (0, Wd, 270)):
        pen.circle(cx, cy, 1.0, a0, a0 + 90, 8)


def _draw_goals(pen: _PitchPen) -> None:
    """Posts and crossbar (upright), the net behind them."""
    d, z, lw = pen.draw, pen.z, pen.lw
    net = (205, 205, 205)
    for gx, back in ((0.0, -2.0), (PITCH_L, PITCH_L + 2.0)):
        (fx1, fy1), (fx2, fy2) = pen.at(gx, 30.34), pen.at(gx, 37.66)
        (bx1, by1), (bx2, by2) = pen.at(back, 30.34), pen.at(back, 37.66)
        k1, k2 = _depth(30.34) * PX_PER_M_UP * z, _depth(37.66) * PX_PER_M_UP * z
        hp1, hp2 = 2.44 * k1, 2.44 * k2          # post heights, px
        hb1, hb2 = 1.6 * k1, 1.6 * k2            # the net's back, lower
        for t in np.linspace(0, 1, 7):               # net mesh: verticals across the back
            d.line([(bx1 + t * (bx2 - bx1), by1 + t * (by2 - by1)),
                    (bx1 + t * (bx2 - bx1), by1 + t * (by2 - by1) - (hb1 + t * (hb2 - hb1)))],
                   fill=net, width=1)
        for t in np.linspace(0, 1, 5):               # net mesh: roof/side lines
            d.line([(fx1 + t * (bx1 - fx1), fy1 - hp1 + t * (hp1 - hb1) + t * (by1 - fy1)),
                    (fx2 + t * (bx2 - fx2), fy2 - hp2 + t * (hp2 - hb2) + t * (by2 - fy2))],
                   fill=net, width=1)
        d.line([(bx1, by1 - hb1), (bx2, by2 - hb2)], fill=net, width=1)
        d.line([(fx1, fy1 - hp1), (bx1, by1 - hb1)], fill=net, width=1)
        d.line([(fx2, fy2 - hp2), (bx2, by2 - hb2)], fill=net, width=1)
        white = (250, 250, 250)
        d.line([(fx1, fy1), (fx1, fy1 - hp1)], fill=white, width=lw + 1)
        d.line([(fx2, fy2), (fx2, fy2 - hp2)], fill=white, width=lw + 1)
        d.line([(fx1, fy1 - hp1), (fx2, fy2 - hp2)], fill=white, width=lw + 1)


def _draw_corner_flags(pen: _PitchPen, colour: tuple) -> None:
    d, z = pen.draw, pen.z
    for cx, cy in ((0, 0), (PITCH_L, 0), (PITCH_L, PITCH_W), (0, PITCH_W)):
        px, py = pen.at(cx, cy)
        hpx = 1.5 * _depth(cy) * PX_PER_M_UP * z
        d.line([(px, py), (px, py - hpx)], fill=(230, 230, 230), width=pen.lw)
        d.polygon([(px, py - hpx), (px + 4 * z, py - hpx + 1.5 * z), (px, py - hpx + 3 * z)],
                  fill=colour)


def _nv12(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB (h, w, 3) -> Y (h, w) and interleaved UV (h/2, w): chroma is the 2x2 mean,
    rounded half to even."""
    yuv = _yuv(rgb)
    y = np.ascontiguousarray(yuv[..., 0])
    c = yuv[..., 1:].astype(np.uint16)
    s = c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2]    # 4 x the 2x2 mean
    q, r = s >> 2, s & 3
    uv = (q + (r > 2) + ((r == 2) & (q & 1 == 1))).astype(np.uint8)       # round half to even
    return y, np.ascontiguousarray(uv.reshape(rgb.shape[0] // 2, rgb.shape[1]))


# ----------------------------------------------------------------------------- the plan

@dataclass
class PlannedEvent:
    half: int
    position_ms: int
    label: str
    team: str                 # home | away
    zoom: int                 # 1 or 2 during the hold
    side: int                 # which goal the scene uses (0 left, 1 right) where it matters
    flip_y: bool              # mirror across the pitch's long axis (corners, touchlines)
    key: int                  # per-event random stream

    @property
    def game_time(self) -> str:
        s = self.position_ms // 1000
        return f"{self.half} - {s // 60:02d}:{s % 60:02d}"


@dataclass
class GamePlan:
    league: str
    season: str
    name: str
    home: str
    away: str
    date: str
    events: list = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.league}/{self.season}/{self.name}"

    @property
    def score(self) -> tuple[int, int]:
        g = [e.team for e in self.events if e.label == "Goal"]
        return g.count("home"), g.count("away")


_LEAGUES = ["synth_premier", "synth_liga", "synth_serie", "synth_ligue"]
_TEAMS = ["Northfield", "Rivermouth", "Eastbrook", "Westhaven", "Kingsport", "Lakeside", "Hillcrest",
          "Stonebridge", "Ashford", "Millbrook", "Oakridge", "Bayview", "Redcliff", "Greenvale",
          "Fairport", "Elmstead"]


def events_per_half(half_s: float) -> int:
    return max(1, int((half_s - 2.0) // EVENT_SPACING_S))


def plan_games(n_games: int = DEFAULTS["n_games"], half_s: float = DEFAULTS["half_s"],
               seed: int = 0) -> list[GamePlan]:
    """Games, their names and their events (no rendering): deterministic from the seed.

    Each game gets every class once when it has >= 17 events, then extras drawn from a cycle of
    shuffled class lists shared by all games, so class counts differ by at most one or two.
    """
    if n_games < 1 or half_s < 4.0:
        raise ValueError(f"n_games {n_games} must be >= 1 and half_s {half_s} >= 4 s")
    rng = np.random.default_rng([seed, 1])
    n_classes = len(SOCCER_CLASSES)
    per_half = events_per_half(half_s)
    per_game = 2 * per_half
    pool: list[int] = []

    def take(k: int) -> list[int]:
        while len(pool) < k:
            pool.extend(rng.permutation(n_classes).tolist())
        out = pool[:k]
        del pool[:k]
        return out

    teams = rng.permutation(len(_TEAMS))
    games = []
    spacing = (half_s - 2.0) / per_half
    jitter = max(0.0, (spacing - 2 * BLEND_S) / 2 - 0.01)     # scenes never overlap
    for g in range(n_games):
        classes = (rng.permutation(n_classes).tolist() + take(per_game - n_classes)
                   if per_game >= n_classes else take(per_game))
        classes = [classes[i] for i in rng.permutation(len(classes))]
        events = []
        for j, c in enumerate(classes):
            half, k = 1 + j // per_half, j % per_half
            te = 1.0 + (k + 0.5) * spacing + rng.uniform(-1.0, 1.0) * jitter
            te = float(np.clip(te, BLEND_S + 0.05, half_s - BLEND_S - 0.05))
            label = SOCCER_CLASSES[c]
            events.append(PlannedEvent(
                half=half, position_ms=int(round(te * 1000)), label=label,
                team=["home", "away"][int(rng.integers(0, 2))],
                zoom=2 if rng.random() < _ZOOM_P.get(label, 0.0) else 1,
                side=int(rng.integers(0, 2)), flip_y=bool(rng.integers(0, 2)),
                key=int(rng.integers(0, 2 ** 31))))
        events.sort(key=lambda e: (e.half, e.position_ms))
        # round-robin pairings (an odd offset never pairs a team with itself), one game every
        # third day of the season
        nt = len(_TEAMS)
        home = _TEAMS[teams[g % nt]]
        away = _TEAMS[teams[(g + 1 + 2 * (g // nt)) % nt]]
        league = _LEAGUES[g % min(len(_LEAGUES), max(1, (n_games + 3) // 4))]
        day = datetime.date(2024, 8, 10) + datetime.timedelta(days=3 * g)
        hour = 13 + (5 * g) % 9
        plan = GamePlan(league, "2024-2025", "", home, away,
                        f"{day:%d/%m/%Y} - {hour}:00", events)
        h, a = plan.score
        plan.name = f"{day:%Y-%m-%d} - {hour}-00 {home} {h} - {a} {away}"
        if any(p.id == plan.id for p in games):         # many games: keep ids unique
            plan.name += f" ({g})"
        games.append(plan)
    return games


def labels_json(plan: GamePlan) -> dict:
    """The game's Labels-v2.json content (the real schema)."""
    h, a = plan.score
    return {
        "UrlLocal": plan.id + "/",
        "UrlYoutube": "",
        "gameAwayTeam": plan.away,
        "gameDate": plan.date,
        "gameHomeTeam": plan.home,
        "gameScore": f"{h} - {a}",
        "annotations": [{"gameTime": e.game_time, "label": e.label, "position": str(e.position_ms),
                         "team": e.team, "visibility": "visible"} for e in plan.events],
    }


# ----------------------------------------------------------------------------- scenes

@dataclass
class _Scene:
    pos: np.ndarray                  # (N_ACTORS, 2) metres
    pose: np.ndarray                 # (N_ACTORS,) pose, -1 = from motion
    lift: np.ndarray                 # (N_ACTORS,) metres above the ground
    visible: np.ndarray              # (N_ACTORS,) bool
    ball: np.ndarray                 # (3,) x, y, height
    cam: np.ndarray                  # (2,) camera centre, metres
    wiggle: np.ndarray               # (N_ACTORS,) metres of motion during the hold
    items: list = field(default_factory=list)
    big_ball: bool = False
    walk: tuple | None = None        # (actor, (dx, dy) m/s): walks through the hold


def _formation(attack_right: bool) -> np.ndarray:
    """(11, 2) home positions for a team attacking toward x=105 (mirrored otherwise)."""
    f = np.array([(4, 34), (20, 12), (18, 27), (18, 41), (20, 56), (38, 10), (36, 26), (36, 42),
                  (38, 58), (50, 27), (50, 41)], float)
    if not attack_right:
        f[:, 0] = PITCH_L - f[:, 0]
    return f


def _scatter(rng, n, xr, yr):
    return np.stack([rng.uniform(*xr, n), rng.uniform(*yr, n)], 1)


@dataclass(frozen=True)
class _Cast:
    """Who plays a scene. A, D: the attacking and defending teams' actor ids (goalkeeper first);
    a, d: their outfield players in a per-event shuffled order (the scenes take who they need from
    the front: a[0] is the penalty taker, the shooter, the thrower...)."""
    A: list
    D: list
    a: list
    d: list


def _default_scene(rng: np.random.Generator, A: list, D: list) -> tuple[_Scene, _Cast]:
    """Keepers in goal, officials at their posts, everyone else spread out upfield: what a class
    scene starts from before it moves the actors its signature needs."""
    pos = np.zeros((N_ACTORS, 2))
    vis = np.ones(N_ACTORS, bool)
    vis[SUB] = False
    a, d = list(A[1:]), list(D[1:])
    rng.shuffle(a)
    rng.shuffle(d)
    pos[D[0]] = (0.8, 34 + rng.normal(0, 1.0))
    pos[A[0]] = (103.5, 34 + rng.normal(0, 2.0))
    pos[a] = _scatter(rng, 10, (25, 70), (5, 63))
    pos[d] = _scatter(rng, 10, (20, 60), (5, 63))
    pos[REF] = (30 + rng.normal(0, 4), 34 + rng.normal(0, 8))
    pos[LIN_FAR] = (rng.uniform(12, 40), -1.2)
    pos[LIN_NEAR] = (rng.uniform(60, 95), 69.2)
    pos[FOURTH] = (52.5, -2.6)
    pos[SUB] = (54.5, -2.4)
    sc = _Scene(pos=pos, pose=np.full(N_ACTORS, -1), lift=np.zeros(N_ACTORS), visible=vis,
                ball=np.array([30.0, 34.0, 0.0]), cam=np.array([20.0, 34.0]),
                wiggle=np.full(N_ACTORS, 0.15))
    return sc, _Cast(A, D, a, d)


# One function per class below, each moving the default scene into the class's signature
# (CLASS_SIGNATURES), in the canonical frame: the attacked goal at x = 0. They draw from the
# event's random stream in a fixed order, so a seed gives the same scene every time.

def _penalty(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose = rng.uniform, sc.pos, sc.pose
    sc.ball[:] = (11, 34, 0)
    pos[c.a[0]] = (13.3, 34 + u(-1.5, 1.5))
    pose[c.a[0]] = STAND
    pos[c.D[0]] = (0.3, 34 + u(-0.5, 0.5))
    pose[c.D[0]] = ARMS_OUT
    ring = c.a[1:5] + c.d[:4]                    # everyone else lined up outside the box
    ys = np.sort(u(16, 52, len(ring)))
    pos[ring] = np.stack([u(17.2, 20.5, len(ring)), ys], 1)
    pose[ring] = STAND
    pos[REF] = (14.5, 44 + u(-2, 2))
    sc.cam[:] = (13, 34)


def _kick_off(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose, a, d = rng.uniform, sc.pos, sc.pose, c.a, c.d
    sc.ball[:] = (52.5, 34, 0)
    pos[a[0]] = (52.9, 34.9)
    pos[a[1]] = (53.6, 37.5)
    rows_a = [(60, 12), (60, 28), (60, 40), (60, 56), (72, 14), (70, 34), (72, 54), (85, 20)]
    rows_d = [(43, 10), (44, 28), (44, 40), (43, 58), (32, 16), (30, 30), (30, 40), (32, 52),
              (20, 26), (20, 42)]
    pos[a[2:]] = np.array(rows_a[:len(a) - 2]) + rng.normal(0, 0.8, (len(a) - 2, 2))
    pos[d] = np.array(rows_d) + rng.normal(0, 0.8, (10, 2))
    pose[a + d] = STAND
    pos[c.D[0]] = (1.0, 34)
    pos[c.A[0]] = (104, 34)
    pos[REF] = (47 + u(-2, 2), 22 + u(-3, 3))
    sc.cam[:] = (52.5, 34)


def _goal(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose = rng.uniform, sc.pos, sc.pose
    sc.ball[:] = (-1.2, 34 + u(-2.5, 2.5), 0.3)
    pos[c.D[0]] = (1.8, 34 + u(-3, 3))
    pose[c.D[0]] = LYING
    cy = u(9, 18) if rng.random() < 0.5 else u(50, 59)
    centre = np.array([u(8, 15), cy])
    grp = c.a[:5]                                # the celebrating attackers
    pos[grp] = centre + rng.normal(0, 0.9, (5, 2)) * (1.0, 1.6)
    pose[grp] = [ARMS_UP, ARMS_UP, STAND, ARMS_UP, STAND]
    sc.wiggle[grp] = 0.45
    pos[c.d[:4]] = _scatter(rng, 4, (3, 13), (22, 46))
    pose[c.d[:4]] = STAND
    pos[REF] = (24, 34 + u(-6, 6))
    sc.cam[:] = (10, 34) if rng.random() < 0.5 else centre


def _substitution(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose = rng.uniform, sc.pos, sc.pose
    pos[FOURTH] = (52.5, -2.4)
    pose[FOURTH] = ARMS_UP
    sc.items.append(("board", FOURTH))
    off = c.a[0]
    pos[off] = (51.0 - u(0, 1.5), 0.6)
    sc.walk = (off, (0.2, -0.9))                 # walks off over the touchline
    sc.visible[SUB] = True
    pos[SUB] = (54.2, -1.9)
    pose[SUB] = STAND
    others = c.a[1:] + c.d
    pos[others] = _scatter(rng, len(others), (30, 75), (12, 58))
    pose[others] = STAND
    pos[REF] = (48 + u(-3, 3), 9 + u(-2, 3))
    pos[LIN_FAR] = (u(20, 35), -1.2)
    sc.cam[:] = (52.5, 3)


def _offside(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose, a, d = rng.uniform, sc.pos, sc.pose, c.a, c.d
    xl = u(16, 32)                               # the defenders' line
    ys = np.array([13, 27, 41, 55]) + rng.normal(0, 1.5, 4)
    pos[d[:4]] = np.stack([xl + u(-0.25, 0.25, 4), ys], 1)
    pose[d[:4]] = STAND
    pos[a[0]] = (xl - u(1.8, 4.0), u(20, 48))
    sc.ball[:] = (pos[a[0], 0] - 0.7, pos[a[0], 1] + 0.4, 0)
    pos[a[1:4]] = np.stack([xl + u(2, 9, 3), u(10, 58, 3)], 1)
    pos[a[4:]] = _scatter(rng, len(a) - 4, (xl + 14, xl + 45), (5, 63))
    pos[d[4:]] = _scatter(rng, len(d) - 4, (xl + 12, xl + 40), (5, 63))
    pos[LIN_FAR] = (xl, -1.2)
    pose[LIN_FAR] = ARM_UP
    pos[REF] = (xl + u(12, 20), 40 + u(-6, 6))
    pos[c.D[0]] = (2.5, 34 + u(-3, 3))
    sc.cam[:] = (xl - 1, 26)


def _shot_on_target(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose = rng.uniform, sc.pos, sc.pose
    shooter = _shooter(sc, rng, c, u(12, 19))
    target = np.array([0.0, 34 + u(-3.0, 3.0), u(0.4, 2.0)])
    sc.ball[:2] = shooter + 0.78 * (target[:2] - shooter)
    sc.ball[2] = target[2] * 0.9
    pos[c.D[0]] = (0.9, target[1] + (0.6 if target[1] > 34 else -0.6))
    pose[c.D[0]] = DIVE                          # in the air, toward the ball
    sc.lift[c.D[0]] = 0.5 + 0.3 * target[2]
    _shot_marking(sc, rng, c, shooter)


def _shot_off_target(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u = rng.uniform
    shooter = _shooter(sc, rng, c, u(17, 26))
    if rng.random() < 0.6:   # wide of a post
        target = np.array([u(-1.0, 1.0), 34 + rng.choice([-1, 1]) * u(5.5, 9.0), u(0.3, 1.5)])
    else:                    # over the bar
        target = np.array([u(-0.5, 1.0), 34 + u(-3, 3), u(3.0, 3.8)])
    sc.ball[:] = target
    sc.pos[c.D[0]] = (0.8, 34 + u(-1.5, 1.5))
    sc.pose[c.D[0]] = ARMS_OUT
    _shot_marking(sc, rng, c, shooter)


def _shooter(sc: _Scene, rng: np.random.Generator, c: _Cast, x: float) -> np.ndarray:
    shooter = np.array([x, rng.uniform(24, 44)])
    sc.pos[c.a[0]] = shooter
    sc.pose[c.a[0]] = RUN_A
    return shooter


def _shot_marking(sc: _Scene, rng: np.random.Generator, c: _Cast, shooter: np.ndarray) -> None:
    """Two defenders closing the shooter down, two attackers in the box, each marked."""
    u, pos, a, d = rng.uniform, sc.pos, c.a, c.d
    pos[d[:2]] = shooter + np.array([[-u(2, 4), u(-3, 3)], [-u(3, 6), u(-5, 5)]])
    pos[a[1:3]] = _scatter(rng, 2, (5, 14), (24, 44))
    pos[d[2:4]] = pos[a[1:3]] + rng.normal(0, 1.0, (2, 2))
    sc.cam[:] = (10, 34)


def _clearance(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos = rng.uniform, sc.pos
    dp = np.array([u(6, 15), u(16, 52)])
    pos[c.d[0]] = dp
    sc.pose[c.d[0]] = RUN_B
    sc.ball[:] = (dp[0] + u(3, 6), dp[1] + u(-3, 3), u(3.5, 6.0))
    sc.big_ball = True                           # high in the air: closer to the camera
    pos[c.a[:3]] = dp + rng.normal(0, 1, (3, 2)) * 1.5 + np.array([[2.5, 2], [1.5, -3], [4, 0]])
    pos[c.d[1:4]] = _scatter(rng, 3, (3, 16), (18, 50))
    sc.cam[:] = (13, dp[1])


def _ball_out_of_play(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose = rng.uniform, sc.pos, sc.pose
    far = rng.random() < 0.5                     # which touchline
    x = u(15, 90)
    sc.ball[:] = (x, -1.8 if far else 69.8, 0.25)
    edge = 0.0 if far else PITCH_W
    grp = c.a[:2] + c.d[:2]
    pos[grp] = np.stack([x + u(-6, 6, 4), edge + (1 if far else -1) * u(2.0, 9.0, 4)], 1)
    pose[grp] = STAND
    lin = LIN_FAR if far else LIN_NEAR
    pos[lin] = (x - u(1.5, 4), -1.2 if far else 69.2)
    pose[lin] = ARMS_OUT
    pos[LIN_NEAR if far else LIN_FAR] = (u(60, 95) if far else u(12, 40), 69.2 if far else -1.2)
    sc.cam[:] = (x, 8 if far else 60)


def _throw_in(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose = rng.uniform, sc.pos, sc.pose
    far = rng.random() < 0.5
    x = u(12, 92)
    edge = 0.0 if far else PITCH_W
    out = -1 if far else 1
    pos[c.a[0]] = (x, edge + out * 0.8)
    pose[c.a[0]] = ARMS_UP
    sc.ball[:] = (x, edge + out * 0.8, 2.25)
    grp = c.a[1:3] + c.d[:2]
    pos[grp] = np.stack([x + u(-8, 8, 4), edge - out * u(4, 13, 4)], 1)
    pose[grp] = STAND
    sc.cam[:] = (x, 9 if far else 59)


def _foul(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose, a, d = rng.uniform, sc.pos, sc.pose, c.a, c.d
    spot = np.array([u(22, 80), u(12, 56)])
    pos[a[0]] = spot
    pos[d[0]] = spot + (u(0.8, 1.6), u(-0.8, 0.8))
    pose[[a[0], d[0]]] = LYING
    pos[REF] = spot + (u(2.0, 3.5), u(-3, -1.5))
    pose[REF] = ARM_UP
    grp = a[1:3] + d[1:3]
    ang = rng.uniform(0, 2 * np.pi, 4)           # players converging from all sides
    pos[grp] = spot + np.stack([np.cos(ang), np.sin(ang) * 1.6], 1) * u(3.5, 6.0, (4, 1))
    pose[grp] = STAND
    sc.ball[:] = (spot[0] + u(-3, 3), spot[1] + u(2, 4), 0)
    sc.cam[:] = spot + (1.0, 0)


def _indirect_free_kick(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose, a, d = rng.uniform, sc.pos, sc.pose, c.a, c.d
    b = np.array([u(30, 52), u(10, 58)])
    sc.ball[:] = (b[0], b[1], 0)
    pos[a[0]] = b + (1.1, 0.5)
    pose[a[0]] = STAND
    pos[REF] = b + (u(2, 4), -u(3, 5))
    pose[REF] = ARM_UP
    line_x = u(14, 20)                           # attackers and defenders paired in a line
    ys = np.linspace(18, 50, 5) + rng.normal(0, 1.0, 5)
    pos[a[1:6]] = np.stack([np.full(5, line_x + 1.0), ys], 1)
    pos[d[:5]] = np.stack([np.full(5, line_x - 0.8), ys + u(-0.6, 0.6, 5)], 1)
    pose[a[1:6] + d[:5]] = STAND
    sc.cam[:] = (b[0] - 12, 34 + 0.4 * (b[1] - 34))


def _direct_free_kick(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose, a, d = rng.uniform, sc.pos, sc.pose, c.a, c.d
    dist, ang = u(18, 28), u(-0.6, 0.6)
    goal = np.array([0.0, 34.0])
    b = goal + dist * np.array([np.cos(ang), np.sin(ang) * 1.0])
    sc.ball[:] = (b[0], b[1], 0)
    to_goal = (goal - b) / np.linalg.norm(goal - b)
    perp = np.array([-to_goal[1], to_goal[0]])
    n_wall = int(rng.integers(4, 6))
    wall_c = b + 9.15 * to_goal                  # the wall at 9.15 m, the spray line at its feet
    offs = (np.arange(n_wall) - (n_wall - 1) / 2) * 0.75
    wall = wall_c + offs[:, None] * perp
    pos[d[:n_wall]] = wall
    pose[d[:n_wall]] = STAND
    sc.items.append(("spray", tuple(wall[0] - 0.5 * perp - 0.3 * to_goal),
                     tuple(wall[-1] + 0.5 * perp - 0.3 * to_goal)))
    pos[a[0]] = b - 2.4 * to_goal + 0.6 * perp
    pos[a[1]] = b - 1.2 * to_goal - 1.5 * perp
    pose[a[:2]] = STAND
    pos[a[2:5]] = _scatter(rng, 3, (4, 11), (26, 42))
    pos[d[n_wall:n_wall + 3]] = pos[a[2:5]] + rng.normal(0, 0.8, (3, 2))
    pos[c.D[0]] = (0.6, 34 + 2.0 * np.sign(ang))
    pos[REF] = wall_c + 3.0 * perp
    sc.cam[:] = (b[0] * 0.5 + 2, b[1] * 0.5 + 17)


def _corner(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose = rng.uniform, sc.pos, sc.pose
    top = rng.random() < 0.5
    cy = 0.0 if top else PITCH_W
    sgn = 1 if top else -1
    sc.ball[:] = (0.7, cy + sgn * 0.7, 0)
    pos[c.a[0]] = (1.5, cy - sgn * 0.7)
    pose[c.a[0]] = STAND
    box = c.a[1:5] + c.d[:5]                     # the crowd in the box
    pos[box] = _scatter(rng, len(box), (2.5, 11), (27, 41))
    pose[box] = STAND
    sc.wiggle[box] = 0.35
    pos[c.D[0]] = (0.6, 34 + sgn * -1.2)
    if rng.random() < 0.5:
        pos[c.a[5]] = (6, cy + sgn * 5)
    pos[REF] = (14, 30 + u(-4, 4))
    sc.cam[:] = (8, 20 if top else 48)


def _yellow_card(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    u, pos, pose = rng.uniform, sc.pos, sc.pose
    spot, offender = _booking(sc, rng, c)
    pose[REF] = ARM_UP
    sc.items.append(("card", REF, 1, YELLOW_CARD))
    pos[offender] = spot + (u(1.2, 1.8), u(-0.4, 0.4))   # stands in front of the referee
    pose[offender] = STAND
    grp = c.a[1:3] + c.d[1:2]
    ang = rng.uniform(0, 2 * np.pi, 3)
    pos[grp] = spot + np.stack([np.cos(ang), np.sin(ang) * 1.6], 1) * u(3.5, 6.0, (3, 1))
    pose[grp] = STAND
    _booking_camera(sc, rng, spot)


def _red_card(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    spot, offender = _booking(sc, rng, c)
    sc.pose[REF] = ARM_UP
    sc.items.append(("card", REF, 1, RED_CARD))
    _sent_off(sc, rng, c, spot, offender)
    _booking_camera(sc, rng, spot)


def _second_yellow(sc: _Scene, rng: np.random.Generator, c: _Cast) -> None:
    spot, offender = _booking(sc, rng, c)
    sc.pose[REF] = ARMS_UP                       # a card in each hand
    sc.items.append(("card", REF, 0, YELLOW_CARD))
    sc.items.append(("card", REF, 1, RED_CARD))
    _sent_off(sc, rng, c, spot, offender)
    _booking_camera(sc, rng, spot)


def _booking(sc: _Scene, rng: np.random.Generator, c: _Cast) -> tuple[np.ndarray, int]:
    """The referee's spot and the offender, for the three card classes."""
    spot = np.array([rng.uniform(20, 85), rng.uniform(12, 56)])
    sc.pos[REF] = spot
    return spot, (c.a[0] if rng.random() < 0.5 else c.d[0])


def _sent_off(sc: _Scene, rng: np.random.Generator, c: _Cast, spot: np.ndarray, offender: int) -> None:
    """The offender walks away toward the nearer touchline; two team-mates protest."""
    u, pos, pose = rng.uniform, sc.pos, sc.pose
    toward = -1 if spot[1] < 34 else 1
    pos[offender] = spot + (u(2.5, 4.0), toward * u(2.5, 4.0))
    pose[offender] = -1                          # walking: pose from motion
    sc.wiggle[offender] = 0.0
    sc.walk = (offender, (0.5, toward * 1.5))
    mates = (c.a if offender in c.a else c.d)[1:3]
    pos[mates] = spot + np.array([[-1.1, 0.6], [0.9, -0.8]]) + rng.normal(0, 0.2, (2, 2))
    pose[mates] = ARMS_OUT


def _booking_camera(sc: _Scene, rng: np.random.Generator, spot: np.ndarray) -> None:
    sc.ball[:] = (spot[0] + rng.uniform(-8, 8), spot[1] + rng.uniform(-6, 6), 0)
    sc.cam[:] = spot + (0.8, 0)


_SCENES = {
    "Penalty": _penalty, "Kick-off": _kick_off, "Goal": _goal, "Substitution": _substitution,
    "Offside": _offside, "Shots on target": _shot_on_target, "Shots off target": _shot_off_target,
    "Clearance": _clearance, "Ball out of play": _ball_out_of_play, "Throw-in": _throw_in,
    "Foul": _foul, "Indirect free-kick": _indirect_free_kick, "Direct free-kick": _direct_free_kick,
    "Corner": _corner, "Yellow card": _yellow_card, "Red card": _red_card,
    "Yellow->red card": _second_yellow,
}
assert set(_SCENES) == set(SOCCER_CLASSES) == set(CLASS_SIGNATURES)


def _scene(label: str, rng: np.random.Generator, A: list, D: list) -> _Scene:
    """The class's arrangement with the attacked goal at x = 0 (canonical frame).

    A: attacking team's actor ids (goalkeeper first), D: defending team's.
    """
    if label not in _SCENES:
        raise ValueError(f"no scene for {label!r}")
    sc, cast = _default_scene(rng, A, D)
    _SCENES[label](sc, rng, cast)
    sc.pos[:, 0] = np.clip(sc.pos[:, 0], -3.0, PITCH_L + 3.0)
    sc.pos[:, 1] = np.clip(sc.pos[:, 1], -3.0, PITCH_W + 3.0)
    return sc


def _mirror(sc: _Scene, mirror_x: bool, mirror_y: bool) -> _Scene:
    def mx(x):
        return PITCH_L - x if mirror_x else x

    def my(y):
        return PITCH_W - y if mirror_y else y

    sc.pos[:, 0], sc.pos[:, 1] = mx(sc.pos[:, 0]), my(sc.pos[:, 1])
    sc.ball[0], sc.ball[1] = mx(sc.ball[0]), my(sc.ball[1])
    sc.cam[0], sc.cam[1] = mx(sc.cam[0]), my(sc.cam[1])
    if mirror_y:   # officials stay on their touchlines
        sc.pos[[LIN_FAR, LIN_NEAR]] = sc.pos[[LIN_NEAR, LIN_FAR]].copy()
        sc.pose[[LIN_FAR, LIN_NEAR]] = sc.pose[[LIN_NEAR, LIN_FAR]].copy()
        for i in (FOURTH, SUB):
            sc.pos[i, 1] = PITCH_W - sc.pos[i, 1]
    items = []
    for it in sc.items:
        if it[0] == "spray":
            items.append(("spray", (mx(it[1][0]), my(it[1][1])), (mx(it[2][0]), my(it[2][1]))))
        else:
            items.append(it)
    sc.items = items
    if sc.walk is not None:
        i, (dx, dy) = sc.walk
        sc.walk = (i, (-dx if mirror_x else dx, -dy if mirror_y else dy))
    return sc


# mirroring across the long axis only where the class is symmetric that way
_FLIP_Y_OK = {"Penalty", "Goal", "Offside", "Shots on target", "Shots off target", "Clearance",
              "Foul", "Indirect free-kick", "Direct free-kick", "Corner", "Yellow card", "Red card",
              "Yellow->red card", "Kick-off"}
_ATTACK_CLASSES = {"Penalty", "Goal", "Offside", "Shots on target", "Shots off target", "Corner",
                   "Direct free-kick", "Indirect free-kick", "Throw-in"}


def _event_scene(ev: PlannedEvent) -> _Scene:
    rng = np.random.default_rng(ev.key)
    team = HOME if ev.team == "home" else AWAY
    other = AWAY if ev.team == "home" else HOME
    attack_right = (ev.team == "home") == (ev.half == 1)
    if ev.label in _ATTACK_CLASSES:
        A, D, mirror_x = team, other, attack_right
    elif ev.label == "Clearance":
        A, D, mirror_x = other, team, not attack_right
    else:
        A, D, mirror_x = team, other, bool(ev.side)
    sc = _scene(ev.label, rng, A, D)
    return _mirror(sc, mirror_x, ev.flip_y and ev.label in _FLIP_Y_OK)


# ----------------------------------------------------------------------------- simulation

def _ema(x: np.ndarray, tau_frames: float) -> np.ndarray:
    a = 1.0 - np.exp(-1.0 / max(tau_frames, 1e-6))
    out = np.empty_like(x)
    acc = x[0].copy()
    for k in range(len(x)):
        acc += a * (x[k] - acc)
        out[k] = acc
    return out


def _ball_path(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) ordinary play: passes, dribbles and the odd lobbed ball."""
    t, x = 0.0, np.array([52.5, 34.0])
    times, pts, heights = [0.0], [x.copy()], [0.0]
    total = n / FPS
    while t < total + 1:
        if rng.random() < 0.4:            # dribble
            step = rng.normal(0, 1, 2) * (4, 3)
            speed = rng.uniform(3, 6)
            lob = 0.0
        else:                             # pass
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(8, 32)
            step = np.array([np.cos(ang), 0.7 * np.sin(ang)]) * dist
            speed = rng.uniform(10, 18)
            lob = rng.uniform(2.5, 6) if dist > 22 and rng.random() < 0.5 else 0.0
        nx = np.clip(x + step, (4, 4), (PITCH_L - 4, PITCH_W - 4))
        dt = max(0.25, float(np.linalg.norm(nx - x)) / speed)
        # lobbed: height along the flight
        for f in np.linspace(0, 1, 6)[1:]:
            times.append(t + f * dt)
            pts.append(x + f * (nx - x))
            heights.append(4 * lob * f * (1 - f))
        t += dt
        x = nx
        pause = rng.uniform(0, 0.6)
        times.append(t + pause)
        pts.append(x.copy())
        heights.append(0.0)
        t += pause
    times = np.asarray(times)
    pts = np.asarray(pts)
    tt = np.arange(n) / FPS
    return np.stack([np.interp(tt, times, pts[:, 0]), np.interp(tt, times, pts[:, 1]),
                     np.interp(tt, times, heights)], 1)


def _play(rng: np.random.Generator, ball: np.ndarray, half: int) -> np.ndarray:
    """(n, N_ACTORS, 2) positions in ordinary play."""
    n = len(ball)
    t = np.arange(n) / FPS
    pos = np.zeros((n, N_ACTORS, 2))
    home_right = half == 1
    bx, by = ball[:, 0:1], ball[:, 1:2]
    for team, right in ((HOME, home_right), (AWAY, not home_right)):
        f = _formation(right)
        shift_x = 0.55 * (bx - PITCH_L / 2)
        shift_y = 0.25 * (by - PITCH_W / 2)
        px = f[None, 1:, 0] + shift_x
        py = f[None, 1:, 1] + shift_y
        amp = rng.uniform(1.5, 4, (2, 10))
        w = rng.uniform(0.15, 0.7, (2, 10))
        ph = rng.uniform(0, 2 * np.pi, (2, 10))
        px = px + amp[0] * np.sin(w[0] * t[:, None] + ph[0])
        py = py + amp[1] * np.sin(w[1] * t[:, None] + ph[1])
        # the nearest player goes to the ball (soft assignment: no teleporting)
        dist = np.hypot(px - bx, py - by)
        wgt = np.exp(-(dist - dist.min(axis=1, keepdims=True)) / 2.0)
        wgt = np.where(dist == dist.min(axis=1, keepdims=True), 1.0, 0.35 * wgt)
        pull = np.clip(wgt, 0, 1) * 0.85
        off = 0.8 if right else -0.8
        px = px + pull * (bx - off - px)
        py = py + pull * (by - py)
        pos[:, team[1:], 0] = np.clip(px, 1, PITCH_L - 1)
        pos[:, team[1:], 1] = np.clip(py, 1, PITCH_W - 1)
        gx = PITCH_L - 1.5 if right else 1.5
        gsign = -1 if right else 1
        pos[:, team[0], 0] = gx + gsign * np.clip(0.07 * np.abs(ball[:, 0] - gx), 0, 6)
        pos[:, team[0], 1] = 34 + 0.2 * (ball[:, 1] - 34)
    pos[:, REF, 0] = ball[:, 0] - 8 + 3 * np.sin(0.3 * t)
    pos[:, REF, 1] = np.clip(ball[:, 1] + 9, 5, 63)
    pos[:, LIN_FAR, 0] = np.clip(ball[:, 0], PITCH_L / 2, PITCH_L - 3)
    pos[:, LIN_FAR, 1] = -1.2
    pos[:, LIN_NEAR, 0] = np.clip(ball[:, 0], 3, PITCH_L / 2)
    pos[:, LIN_NEAR, 1] = PITCH_W + 1.2
    pos[:, FOURTH] = (52.5, -2.6)
    pos[:, SUB] = (56.0, -2.4)
    return pos


@dataclass
class _Timeline:
    pos: np.ndarray        # (n, N, 2)
    pose: np.ndarray       # (n, N)
    lift: np.ndarray       # (n, N)
    visible: np.ndarray    # (n, N)
    ball: np.ndarray       # (n, 3)
    big_ball: np.ndarray   # (n,)
    cam: np.ndarray        # (n, 2)
    zoom: np.ndarray       # (n,)
    items: list            # per frame: list of items


def _blend_weight(dt: np.ndarray) -> np.ndarray:
    """Scene weight at |t - te| = dt: 1 during the hold, a smoothstep down to 0 at BLEND_S."""
    w = np.clip((BLEND_S - dt) / (BLEND_S - HOLD_S), 0, 1)
    return w * w * (3 - 2 * w)


def _timeline(rng: np.random.Generator, half: int, n: int, events: list) -> _Timeline:
    t = np.arange(n) / FPS
    ball = _ball_path(rng, n)
    play = _ema(_play(rng, ball, half), 0.2 * FPS)      # smoothed play; scenes blend in exactly
    pos, bl = play.copy(), ball.copy()
    pose = np.full((n, N_ACTORS), -1)
    lift = np.zeros((n, N_ACTORS))
    vis = np.ones((n, N_ACTORS), bool)
    vis[:, SUB] = False
    big = np.zeros(n, bool)
    cam_target = ball[:, :2].copy()
    zoom = np.ones(n, np.int64)
    items: list = [[] for _ in range(n)]
    hold = np.zeros(n, bool)
    wig_phase = rng.uniform(0, 2 * np.pi, (N_ACTORS, 2))
    scenes = []
    for ev in events:
        te = ev.position_ms / 1000
        sc = _event_scene(ev)
        scenes.append((ev, sc))
        dt = np.abs(t - te)
        w = _blend_weight(dt)
        ks = np.nonzero(w > 0)[0]
        for k in ks:
            wk = w[k]
            wig = sc.wiggle[:, None] * np.sin(2 * np.pi * 1.3 * t[k] + wig_phase)
            pos[k] = (1 - wk) * play[k] + wk * (sc.pos + wig)
            bl[k] = (1 - wk) * ball[k] + wk * sc.ball
            cam_target[k] = (1 - wk) * ball[k, :2] + wk * sc.cam
            if wk >= 0.5:
                sel = sc.pose >= 0
                pose[k, sel] = sc.pose[sel]
                lift[k] = sc.lift
                vis[k] = sc.visible
                big[k] = sc.big_ball
            if wk >= 0.75:
                items[k] = sc.items
            if dt[k] <= HOLD_S:
                hold[k] = True
                zoom[k] = ev.zoom
    # close-ups during ordinary play too, so that a close-up alone does not mean "event"
    k = 0
    while k < n:
        if not hold[k] and rng.random() < 0.25 / FPS:
            length = int(rng.uniform(1.0, 2.0) * FPS)
            seg = np.arange(k, min(n, k + length))
            if not hold[seg].any() and not (np.abs(t[seg, None] - np.array(
                    [e.position_ms / 1000 for e in events] or [1e9])[None]) < BLEND_S + 0.2).any():
                zoom[seg] = 2
                k += length
        k += 1
    for ev, sc in scenes:     # e.g. the sent-off player walks toward the touchline
        if sc.walk is not None:
            i, vel = sc.walk
            te = ev.position_ms / 1000
            w = np.clip((BLEND_S - np.abs(t - te)) / (BLEND_S - HOLD_S), 0, 1)
            pos[:, i] += (w * (t - te))[:, None] * np.asarray(vel)[None]
    cam = cam_target.copy()
    soft = _ema(cam_target, 0.35 * FPS)
    cam[~hold] = soft[~hold]
    # poses from motion: running legs when moving
    speed = np.zeros((n, N_ACTORS))
    speed[1:] = np.hypot(*(pos[1:] - pos[:-1]).transpose(2, 0, 1)) * FPS
    phase = rng.uniform(0, 2, N_ACTORS)
    run = np.where(np.floor(t[:, None] * 5 + phase[None]) % 2 == 0, RUN_A, RUN_B)
    auto = np.where(speed > 1.2, run, STAND)
    pose = np.where(pose >= 0, pose, auto)
    return _Timeline(pos, pose, lift, vis, bl, big, cam, zoom, items)


# ----------------------------------------------------------------------------- rendering

_ITEM_PALS = {
    "board": _yuv([(0, 0, 0), (20, 20, 20), (240, 30, 30), (40, 240, 60), (200, 200, 200)]),
    "flag": _yuv([(0, 0, 0), (250, 220, 0), (230, 20, 20), (60, 60, 60)]),
    "ball": _yuv([(0, 0, 0), (250, 250, 250), (175, 175, 180)]),
    "spray": _yuv([(0, 0, 0), (252, 252, 252)]),
}


class _Worlds(dict):
    """zoom -> world planes, drawn on first use."""

    def __init__(self, style):
        super().__init__()
        self.style = style

    def __missing__(self, z):
        self[z] = _world(self.style, z)
        return self[z]


@functools.lru_cache(maxsize=2)
def _game_look(seed: int, game_index: int):
    """A game's style and its world images (both halves of a game share them)."""
    style = _make_style(np.random.default_rng([seed, 3, game_index]))
    return style, _Worlds(style)


def _camera(cam_xy, z: int) -> tuple[int, int]:
    cpx, cpy, _ = to_px(cam_xy[0], cam_xy[1], z)
    ox = int(np.clip(round((cpx - W / 2) / 2) * 2, 0, WORLD_W * z - W))
    oy = int(np.clip(round((cpy - H / 2 - 12 * z) / 2) * 2, 0, WORLD_H * z - H))
    return ox, oy


def _render_half(path: Path, seed: int, game_index: int, half: int, half_s: float,
                 events: list) -> dict:
    """One half as path (H.264 .mkv), written as path.part and renamed once complete."""
    import av

    style, worlds = _game_look(seed, game_index)
    n = int(round(half_s * FPS))
    tl = _timeline(np.random.default_rng([seed, 4, game_index, half]), half, n, events)
    frames = _HalfFrames(tl, style, worlds)
    tmp = path.with_name(path.name + ".part")
    container = av.open(str(tmp), mode="w", format="matroska")
    try:
        stream = _h264_stream(container)
        painter = None
        for k in range(n):
            # paint straight into a fresh frame's planes (no from_ndarray copy)
            frame = av.VideoFrame(W, H, "nv12")
            py, puv = frame.planes
            if painter is None:        # one per half: it keeps the coloured sprites it prepared
                painter = _Painter(py.line_size, puv.line_size)
            painter.set_planes(np.frombuffer(py, np.uint8), np.frombuffer(puv, np.uint8))
            frames.paint(painter, k)
            frame.pts = k
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    os.replace(tmp, path)
    return {"path": str(path), "frames": n}


def _h264_stream(container):
    """SoccerNet's 224p video stream: W x H at 25 fps, fed NV12, preset ultrafast, CRF 23, a
    keyframe every 2 s."""
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = W, H, "nv12"
    stream.options = {"preset": "ultrafast", "crf": "23"}
    stream.codec_context.gop_size = 2 * FPS
    stream.codec_context.thread_count = 1
    stream.codec_context.time_base = Fraction(1, FPS)
    return stream


class _HalfFrames:
    """What each frame of a half shows, in frame px. The geometry of every frame is computed at
    once with numpy and kept as plain Python lists, so painting frame k only looks numbers up."""

    def __init__(self, tl: _Timeline, style: _Style, worlds: _Worlds):
        self.worlds, self.pals, self.items = worlds, style.palettes, tl.items
        self.shadow_pal = np.stack([_yuv((0, 0, 0)), _yuv((0, 0, 0)), _yuv((0, 0, 0)),
                                    _yuv(style.grass * 0.5)])
        # the camera: top-left corner (even px) of the frame in the world image at its zoom
        zf = tl.zoom.astype(np.float64)
        cpx, cpy, _ = to_px(tl.cam[:, 0], tl.cam[:, 1], zf)
        ox = np.clip(np.round((cpx - W / 2) / 2) * 2, 0, WORLD_W * zf - W).astype(np.int64)
        oy = np.clip(np.round((cpy - H / 2 - 12 * zf) / 2) * 2, 0, WORLD_H * zf - H).astype(np.int64)
        # the people: feet, sprite height, lift, depth order, who is on screen
        fx, fy, depth = to_px(tl.pos[..., 0], tl.pos[..., 1], zf[:, None])
        fx, fy = fx - ox[:, None], fy - oy[:, None]
        heights = np.maximum(6, np.round(PLAYER_PX * depth * zf[:, None])).astype(np.int64)
        lift_px = tl.lift * PX_PER_M_UP * depth * zf[:, None]
        order = np.argsort(fy, axis=1, kind="stable")
        show = tl.visible & (fx > -40 * zf[:, None]) & (fx < W + 40 * zf[:, None])
        # the ball: ground point, size (as a player's height there) and height above the ground
        bx, by, bdepth = to_px(tl.ball[:, 0], tl.ball[:, 1], zf)
        bx, by = bx - ox, by - oy
        bh = np.maximum(6, np.round(PLAYER_PX * bdepth * zf)).astype(np.int64)
        ball_lift = tl.ball[:, 2] * PX_PER_M_UP * (bh / (PLAYER_PX * zf)) * zf
        self.cols = [a.tolist() for a in (tl.zoom, ox, oy, bx, by, bh, ball_lift, tl.ball[:, 2],
                                          tl.big_ball)]
        self.rows = [a.tolist() for a in (fx, fy, heights, lift_px, order, show, tl.pose)]

    def paint(self, painter: _Painter, k: int) -> None:
        """Frame k: the world crop, the ball's shadow, the people far to near with the ball
        among them in depth order, the assistants' flags, then the scene's items."""
        z, oxk, oyk, bxk, byk, bhk, blk, bz, big = (c[k] for c in self.cols)
        fxk, fyk, hk, lk, ok, sk, pk = (r[k] for r in self.rows)
        wy, wuv = self.worlds[z]
        painter.Y[:] = wy[oyk:oyk + H, oxk:oxk + W]
        painter.UV[:] = wuv[oyk // 2:oyk // 2 + H // 2, oxk:oxk + W]        # ox, oy are even
        anchors = {}
        if bz > 0.3:
            painter.blit(_item("shadow", bhk), self.shadow_pal, "shadow", byk + 1, bxk)
        ball = _item("ball_big" if big else "ball", bhk)
        ball_drawn = False
        for i in ok:
            if not sk[i]:
                continue
            if not ball_drawn and fyk[i] > byk:
                painter.blit(ball, _ITEM_PALS["ball"], "ball", byk - blk, bxk)
                ball_drawn = True
            spr = _person(hk[i], pk[i])
            ay = fyk[i] - lk[i]
            painter.blit(spr, self.pals[i], i, ay, fxk[i])
            anchors[i] = (ay, fxk[i], spr, hk[i])
            if (i == LIN_FAR or i == LIN_NEAR) and spr.hands:      # the assistant's flag
                hy, hx = spr.hands[1]
                flag = _item("flag", hk[i])
                painter.blit(flag, _ITEM_PALS["flag"], "flag", ay + hy + 1, fxk[i] + hx + flag.ax)
        if not ball_drawn:
            painter.blit(ball, _ITEM_PALS["ball"], "ball", byk - blk, bxk)
        for it in self.items[k]:
            _draw_item(painter, it, anchors, oxk, oyk, z)


_CARD_PALS = {c: np.stack([_yuv((0, 0, 0)), _yuv(c)]) for c in (YELLOW_CARD, RED_CARD)}


def _draw_item(painter, it, anchors, ox, oy, z):
    kind = it[0]
    if kind == "card" and it[1] in anchors:
        fy, fx, spr, h = anchors[it[1]]
        if spr.hands:
            hy, hx = spr.hands[it[2]]
            painter.blit(_item("card", h), _CARD_PALS[it[3]], it[3], fy + hy + 1, fx + hx)
    elif kind == "board" and it[1] in anchors:
        fy, fx, spr, h = anchors[it[1]]
        if spr.hands:
            (ly, lx), (ry, rx) = spr.hands
            board = _item("board", h)
            painter.blit(board, _ITEM_PALS["board"], "board", fy + min(ly, ry) + 1, fx + (lx + rx) / 2)
    elif kind == "spray":
        (x0, y0), (x1, y1) = it[1], it[2]
        m = max(2, int(np.hypot(x1 - x0, y1 - y0) * 2.5 * z))
        xs, ys = np.linspace(x0, x1, m), np.linspace(y0, y1, m)
        px, py, dep = to_px(xs, ys, z)
        for a, b_, dd in zip(px - ox, py - oy, dep):
            painter.blit(_item("spray", max(6, round(PLAYER_PX * dd * z))), _ITEM_PALS["spray"], "spray",
                         b_, a)


# ----------------------------------------------------------------------------- basketball

_ARENAS = ["SYN-NORTHPORT", "SYN-LAKEVIEW", "SYN-HILLCREST", "SYN-RIVERTON", "SYN-OAKDALE",
           "SYN-BAYSIDE", "SYN-PINEWOOD", "SYN-CEDARFALLS", "SYN-MAPLETON", "SYN-SEAVIEW",
           "SYN-FOXBORO", "SYN-GRANITEVILLE", "SYN-WILLOWBY", "SYN-ELMHURST", "SYN-BROOKDALE",
           "SYN-SUMMIT"]
_WOOD = [(200, 155, 105), (218, 178, 122), (175, 120, 75), (228, 195, 145), (190, 140, 90)]
_PAINT = [(30, 70, 160), (170, 30, 40), (30, 120, 70), (90, 40, 130), (60, 60, 70), (200, 110, 30)]
_BB_KITS = [(240, 240, 240), (30, 40, 120), (180, 30, 40), (240, 180, 30), (30, 120, 60),
            (20, 20, 20), (100, 60, 160), (60, 160, 220)]


def arena_names(n_arenas: int) -> list[str]:
    return [(_ARENAS[i] if i < len(_ARENAS) else f"SYN-ARENA-{i}") for i in range(n_arenas)]


def _look_at(cam, target):
    fwd = np.asarray(target, float) - cam
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, (0, 0, 1.0))
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return np.stack([right, down, fwd])


def _court_image(rng, arena: dict, camera: dict, size: tuple[int, int]):
    """Floor, lines, boards and crowd by back-projecting every pixel (returns uint8 HxWx3).

    Each pixel gets a palette index (wood, apron, key paint, line, board k, crowd k, ...) and a
    brightness factor (plank grain, crowd tiers); one palette lookup colours the image. The
    background is computed at half resolution and doubled (people are drawn at full resolution
    on top): it halves the generation time.
    """
    w, h = (size[0] + 1) // 2, (size[1] + 1) // 2
    X, Y, Z, on_floor = _back_project(camera, w, h)
    cls, shade = _floor_classes(X, Y, on_floor, arena)
    _add_wall_classes(cls, shade, X, Z, ~on_floor, arena)
    img = np.clip(_court_palette(arena)[cls] * shade[..., None], 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img.repeat(2, 0).repeat(2, 1)[:size[1], :size[0]])


def _back_project(camera: dict, w: int, h: int):
    """World (X, Y, Z) in metres where each pixel's ray (of a w x h image at half the camera's
    focal length) meets the floor or the stands' wall at y = 18 m, and whether it is the floor."""
    R, cam, f = camera["R"].astype(np.float32), camera["cam"].astype(np.float32), camera["f"] / 2
    uu = ((np.arange(w, dtype=np.float32) + 0.5 - w / 2) / f)[None, :]
    vv = ((np.arange(h, dtype=np.float32) + 0.5 - h / 2) / f)[:, None]
    # ray direction in world = R^T @ (u, v, 1)
    rx = uu * R[0, 0] + vv * R[1, 0] + R[2, 0]
    ry = uu * R[0, 1] + vv * R[1, 1] + R[2, 1]
    rz = uu * R[0, 2] + vv * R[1, 2] + R[2, 2]
    wall_y = np.float32(18.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(rz < -1e-6, -cam[2] / rz, np.float32(1e9)).astype(np.float32)
        t_wall = np.where(ry > 1e-6, (wall_y - cam[1]) / ry, np.float32(1e9)).astype(np.float32)
    on_floor = (t_floor < 1e8) & (t_floor <= t_wall)
    t = np.where(on_floor, t_floor, np.minimum(t_wall, 1e3))
    return cam[0] + t * rx, cam[1] + t * ry, cam[2] + t * rz, on_floor


def _court_palette(arena: dict) -> np.ndarray:
    """0 wood, 1 apron, 2 far floor, 3 paint, 4 line, 5 roof, 8.. boards, 16.. crowd."""
    pal = np.zeros((32, 3), np.float32)
    pal[0] = arena["wood"]
    pal[1] = np.asarray(arena["paint"], np.float32) * 0.8
    pal[2] = (70, 70, 75)
    pal[3] = arena["paint"]
    pal[4] = arena["line"]
    pal[5] = (25, 25, 30)
    pal[8:8 + len(arena["boards"])] = arena["boards"]
    pal[16:16 + len(arena["crowd"])] = arena["crowd"]
    return pal


def _floor_classes(X, Y, on_floor, arena: dict) -> tuple[np.ndarray, np.ndarray]:
    """Palette index and brightness of each pixel on the floor: the 28 x 15 m court (planks
    with grain, keys, lines), the apron around it, the far floor."""
    h, w = X.shape
    cls = np.zeros((h, w), np.uint8)
    shade = np.ones((h, w), np.float32)
    inside = on_floor & (X >= 0) & (X <= 28) & (Y >= 0) & (Y <= 15)
    apron = on_floor & ~inside & (X > -2.5) & (X < 30.5) & (Y > -2.0) & (Y < 17.0)
    cls[apron] = 1
    cls[on_floor & ~inside & ~apron] = 2
    plank = np.floor(Y / 0.18).astype(np.int32)
    joint = np.floor(X / 2.4 + (plank % 7) / 7.0).astype(np.int32)
    grain = ((plank * 7919 + joint * 10007 + arena["hash"]) % 97).astype(np.float32) / 97.0 - 0.5
    shade = np.where(cls == 0, 1 + 0.10 * grain, shade)
    Xm = np.where(X > 14, 28 - X, X)         # both halves with one set of formulas
    dY = np.abs(Y - 7.5)
    key = inside & (Xm <= 5.8) & (dY <= 2.45)
    if arena["paint_circle"]:
        key |= inside & (np.hypot(X - 14, Y - 7.5) <= 1.8)
    cls[key] = 3
    lw = 0.06
    line = (np.abs(Y) <= lw) | (np.abs(Y - 15) <= lw) | (np.abs(X) <= lw) | (np.abs(X - 28) <= lw)
    line |= np.abs(X - 14) <= lw / 2
    line |= np.abs(np.hypot(X - 14, Y - 7.5) - 1.8) <= lw / 2
    line |= (np.abs(Xm - 5.8) <= lw / 2) & (dY <= 2.45)
    line |= (np.abs(dY - 2.45) <= lw / 2) & (Xm <= 5.8)
    line |= (np.abs(np.hypot(Xm - 5.8, dY) - 1.8) <= lw / 2) & (Xm >= 5.8)
    line |= (np.abs(np.hypot(Xm - 1.575, dY) - 6.75) <= lw / 2) & (Xm >= 2.99)
    line |= (np.abs(dY - 6.6) <= lw / 2) & (Xm < 2.99)
    line &= inside
    cls[line] = 4
    shade[line | key] = 1.0
    return cls, shade


def _add_wall_classes(cls, shade, X, Z, wall, arena: dict) -> None:
    """The pixels on the stands' wall: advertising boards up to 0.9 m, crowd in tiers up to 9 m, roof above."""
    Xw, Zw = X[wall], Z[wall]
    seg = (np.floor((Xw + 40) / 3.5).astype(np.int32) % len(arena["boards"])).astype(np.uint8)
    cell = ((np.floor(Xw / 0.45).astype(np.int32) * 31 + np.floor(Zw / 0.55).astype(np.int32) * 17
             + arena["hash"]) % len(arena["crowd"])).astype(np.uint8)
    cls[wall] = np.where(Zw < 0.9, 8 + seg, np.where(Zw <= 9, 16 + cell, 5)).astype(np.uint8)
    shade[wall] = np.where((Zw >= 0.9) & (np.floor(Zw / 1.1).astype(np.int32) % 2 == 1), 0.8, 1.0)


def _project(camera, pts):
    pts = np.atleast_2d(np.asarray(pts, float))
    d = (pts - camera["cam"]) @ camera["R"].T
    w, h = camera["size"]
    return np.stack([w / 2 + camera["f"] * d[:, 0] / d[:, 2],
                     h / 2 + camera["f"] * d[:, 1] / d[:, 2]], 1), d[:, 2]


def _draw_hoops(draw, camera):
    for sgn, bx, px in ((1, 1.2, -1.0), (-1, 26.8, 29.0)):
        rimx = 1.575 if sgn > 0 else 28 - 1.575
        (p0, p1), dep = _project(camera, [(px, 7.5, 0), (px, 7.5, 3.4)])
        if (dep <= 0.5).any():
            continue
        width = max(2, int(1200 / dep.mean() / 10))
        draw.line([tuple(p0), tuple(p1)], fill=(40, 40, 45), width=width)
        (a0, a1), _ = _project(camera, [(px, 7.5, 3.4), (bx, 7.5, 3.4)])
        draw.line([tuple(a0), tuple(a1)], fill=(40, 40, 45), width=max(2, width // 2))
        board, _ = _project(camera, [(bx, 6.6, 2.9), (bx, 8.4, 2.9), (bx, 8.4, 3.95), (bx, 6.6, 3.95)])
        draw.polygon([tuple(p) for p in board], fill=(235, 235, 240), outline=(30, 30, 30))
        inner, _ = _project(camera, [(bx, 7.2, 3.0), (bx, 7.8, 3.0), (bx, 7.8, 3.45), (bx, 7.2, 3.45)])
        draw.polygon([tuple(p) for p in inner], outline=(200, 40, 30))
        a = np.linspace(0, 2 * np.pi, 20)
        rim, _ = _project(camera, np.stack([rimx + 0.225 * np.cos(a), 7.5 + 0.225 * np.sin(a),
                                            np.full_like(a, 3.05)], 1))
        draw.line([tuple(p) for p in rim], fill=(235, 100, 20), width=2)


def _draw_person(draws, ident, foot, head, colours, rng_pose):
    """A person from foot to head (px) on each (ImageDraw, fill-or-colour-key) pair."""
    fx, fy = foot
    hx, hy = head
    H_ = fy - hy
    if H_ < 6:
        return

    def P(a, b):   # a: across (fraction of height), b: up (0 feet, 1 top of head)
        return (fx + (hx - fx) * b + a * H_, fy + (hy - fy) * b)

    stride = rng_pose["stride"]
    arms = rng_pose["arms"]
    lw = max(2, int(round(0.075 * H_)))
    aw = max(2, int(round(0.055 * H_)))
    for draw, use_colour in draws:
        def col(name):
            return colours[name] if use_colour else ident

        # legs
        for sgn, st in ((-1, stride[0]), (1, stride[1])):
            hip = P(sgn * 0.05, 0.48)
            knee = P(sgn * 0.06 + st * 0.5, 0.26)
            foot_p = P(sgn * 0.06 + st, 0.02)
            draw.line([hip, knee], fill=col("skin"), width=lw)
            draw.line([knee, foot_p], fill=col("socks"), width=lw)
            draw.ellipse([foot_p[0] - lw * 0.8, foot_p[1] - lw * 0.5, foot_p[0] + lw * 0.9,
                          foot_p[1] + lw * 0.4], fill=col("shoes"))
        # shorts, torso
        draw.polygon([P(-0.12, 0.58), P(0.12, 0.58), P(0.13, 0.40), P(0.015, 0.40), P(0, 0.45),
                      P(-0.015, 0.40), P(-0.13, 0.40)], fill=col("shorts"))
        draw.polygon([P(-0.14, 0.83), P(0.14, 0.83), P(0.12, 0.56), P(-0.12, 0.56)], fill=col("shirt"))
        if use_colour:
            draw.polygon([P(-0.04, 0.76), P(0.04, 0.76), P(0.04, 0.64), P(-0.04, 0.64)],
                         fill=colours["number"])
        # arms
        for sgn, ang in ((-1, arms[0]), (1, arms[1])):
            sh = P(sgn * 0.14, 0.81)
            el = P(sgn * (0.16 + 0.10 * np.sin(ang)), 0.81 - 0.15 * np.cos(ang))
            hand = P(sgn * (0.17 + 0.22 * np.sin(ang)), 0.81 - 0.32 * np.cos(ang))
            draw.line([sh, el], fill=col("shirt"), width=aw)
            draw.line([el, hand], fill=col("skin"), width=aw)
        # head
        c = P(0, 0.925)
        r = 0.068 * H_
        draw.ellipse([c[0] - r * 0.85, c[1] - r, c[0] + r * 0.85, c[1] + r], fill=col("skin"))
        draw.chord([c[0] - r * 0.85, c[1] - r, c[0] + r * 0.85, c[1] + r], 180, 360, fill=col("hair"))


def _basketball_image(rng, arena: dict, cam_id: int, size: tuple[int, int]):
    """(uint8 HxWx3, [bool masks]) for one image."""
    from PIL import Image, ImageDraw

    w, h = size
    left = cam_id == 1
    target_x = rng.uniform(4.5, 10.0) if left else rng.uniform(18.0, 23.5)
    cam = np.array([target_x + rng.uniform(-3, 3), -arena["dist"] + rng.uniform(-1, 1),
                    arena["height"] + rng.uniform(-0.7, 0.7)])
    target = np.array([target_x, 7.0 + rng.uniform(-1, 1), 0.6])
    camera = {"R": _look_at(cam, target), "cam": cam, "f": arena["f"] * w / 640 * rng.uniform(0.92, 1.08),
              "size": size}
    img = Image.fromarray(_court_image(rng, arena, camera, size))
    labels = Image.new("I", size, 0)
    draw = ImageDraw.Draw(img)
    ldraw = ImageDraw.Draw(labels)
    _draw_hoops(draw, camera)
    # people: two teams, referees, sometimes a coach on the sideline
    n_players = int(rng.integers(7, 11))
    x_lo, x_hi = (0.5, 16.0) if left else (12.0, 27.5)
    people = []
    for i in range(n_players):
        people.append(("team", i % 2, np.array([rng.uniform(x_lo, x_hi), rng.uniform(0.8, 14.2)])))
    for _ in range(int(rng.integers(1, 3))):
        people.append(("ref", 2, np.array([rng.uniform(x_lo, x_hi), rng.uniform(0.2, 15.5)])))
    if rng.random() < 0.4:
        people.append(("coach", 3, np.array([rng.uniform(8, 20), rng.uniform(-1.6, -0.6)])))
    ball_holder = int(rng.integers(0, n_players))
    drawn = []
    dists = [np.linalg.norm(np.append(p[2], 0) - cam) for p in people]
    order = np.argsort(dists)[::-1]       # far first: nearer people occlude them
    for j, pi in enumerate(order):
        kind, team, xy = people[pi]
        height = rng.uniform(1.80, 2.05) if kind == "team" else rng.uniform(1.70, 1.85)
        (foot, head), dep = _project(camera, [(xy[0], xy[1], 0), (xy[0], xy[1], height)])
        if (dep <= 0.5).any():
            continue
        if kind == "team":
            shirt = arena["kits"][team]
            shorts = shirt
            number = (20, 20, 20) if np.mean(shirt) > 128 else (240, 240, 240)
        elif kind == "ref":
            shirt, shorts, number = (150, 150, 155), (20, 20, 20), (20, 20, 20)
        else:
            shirt, shorts, number = (40, 40, 50), (40, 40, 50), (40, 40, 50)
        colours = {"skin": _SKIN[int(rng.integers(0, len(_SKIN)))], "hair": _HAIR[int(rng.integers(0, 4))],
                   "shirt": shirt, "shorts": shorts,
                   "socks": (235, 235, 235) if kind != "coach" else (30, 30, 30),
                   "shoes": (30, 30, 30) if rng.random() < 0.6 else (230, 230, 230), "number": number}
        pose = {"stride": (rng.uniform(-0.12, 0.05), rng.uniform(-0.05, 0.12)),
                "arms": (rng.uniform(-0.4, 2.8), rng.uniform(-0.4, 2.8))}
        ident = j + 1
        _draw_person([(draw, True), (ldraw, False)], ident, foot, head, colours, pose)
        drawn.append(ident)
        if kind == "team" and pi == ball_holder:
            (bp,), _ = _project(camera, [(xy[0] + 0.35, xy[1] - 0.2, 1.0)])
            r = max(2, 0.12 * (foot[1] - head[1]))
            draw.ellipse([bp[0] - r, bp[1] - r, bp[0] + r, bp[1] + r], fill=(225, 110, 30),
                         outline=(60, 30, 10))
    lab = np.asarray(labels)
    masks = []
    for ident in drawn:
        m = lab == ident
        if m.sum() >= 30:
            masks.append(m)
    return np.asarray(img), masks


def _arena(seed: int, ai: int) -> tuple[np.random.Generator, dict, int, int]:
    """Arena ai's random stream, look, game id and first timestamp."""
    rng = np.random.default_rng([seed, 5, ai])
    kits = rng.choice(len(_BB_KITS), 2, replace=False)
    arena = {"wood": _WOOD[int(rng.integers(0, len(_WOOD)))],
             "paint": _PAINT[int(rng.integers(0, len(_PAINT)))],
             "line": [(245, 245, 245), (20, 20, 25), (245, 245, 245)][int(rng.integers(0, 3))],
             "paint_circle": bool(rng.integers(0, 2)),
             "boards": [tuple(int(c) for c in rng.uniform(10, 250, 3)) for _ in range(5)],
             "crowd": [tuple(int(c) for c in rng.uniform(20, 120, 3)) for _ in range(5)]
             + [tuple(int(c) for c in rng.uniform(120, 230, 3))],
             "kits": [_BB_KITS[kits[0]], _BB_KITS[kits[1]]],
             "height": rng.uniform(6.5, 9.5), "dist": rng.uniform(5.0, 8.0),
             "f": rng.uniform(560, 680), "hash": int(rng.integers(0, 10 ** 6))}
    game = 20000 + int(rng.integers(0, 9999))
    ts0 = 1_513_000_000_000 + int(rng.integers(0, 10 ** 9))
    return rng, arena, game, ts0


def deepsportradar_layout(seed: int = 0, n_arenas: int = DEFAULTS["n_arenas"],
                          images_per_arena: int = DEFAULTS["images_per_arena"]) -> list[dict]:
    """The images write_deepsportradar writes, in order, without drawing them:
    [{"arena", "file_name", "cam_id"}] (file_name relative to the dataset root)."""
    out = []
    for ai, name in enumerate(arena_names(n_arenas)):
        _, _, game, ts0 = _arena(seed, ai)
        for k in range(images_per_arena):
            cam_id = 1 + k % 2
            ts = ts0 + (k // 2) * 280_000 + (k // 2) * 13     # camcourt1/2 pairs share a time
            out.append({"arena": name, "file_name": f"{name}/{game}/camcourt{cam_id}_{ts}_0.png",
                        "cam_id": cam_id})
    return out


def write_deepsportradar(root: str | Path, seed: int = 0, n_arenas: int = DEFAULTS["n_arenas"],
                         images_per_arena: int = DEFAULTS["images_per_arena"],
                         image_size: tuple[int, int] = DEFAULTS["image_size"]) -> Path:
    """The mini DeepSportRadar under root: trainvaltest.json + ARENA/game/camcourtN_ts_0.png."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    coco = {"info": {"description": f"sportray {VERSION} synthetic DeepSportRadar, seed {seed}"},
            "categories": [{"id": 0, "name": "human", "supercategory": "human"}],
            "images": [], "annotations": []}
    layout = deepsportradar_layout(seed, n_arenas, images_per_arena)
    for ai in range(n_arenas):
        rng, arena, _, _ = _arena(seed, ai)
        for item in layout[ai * images_per_arena:(ai + 1) * images_per_arena]:
            file_name = item["file_name"]
            image, masks = _basketball_image(rng, arena, item["cam_id"], image_size)
            out = root / file_name
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(out, compress_level=3)
            img_id = len(coco["images"])
            coco["images"].append({"file_name": file_name, "width": image_size[0],
                                   "height": image_size[1], "id": img_id})
            for m in masks:
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                coco["annotations"].append({
                    "id": len(coco["annotations"]), "image_id": img_id, "category_id": 0,
                    "area": int(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "segmentation": {"size": [int(s) for s in rle["size"]],
                                     "counts": rle["counts"].decode("ascii")},
                    "iscrowd": 0})
    (root / "trainvaltest.json").write_text(json.dumps(coco))
    return root


# ----------------------------------------------------------------------------- corpus

def _run_render_jobs(jobs: list[dict]) -> None:
    for j in jobs:
        _render_half(Path(j["path"]), j["seed"], j["game"], j["half"], j["half_s"],
                     [PlannedEvent(**e) for e in j["events"]])


def _plan_files(root: Path, seed: int, n_games: int, half_s: float) -> tuple[list, list]:
    plans = plan_games(n_games, half_s, seed)
    jobs = []
    for g, plan in enumerate(plans):
        folder = root / plan.league / plan.season / plan.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "Labels-v2.json").write_text(json.dumps(labels_json(plan), indent=1))
        for half in (1, 2):
            jobs.append({"path": str(folder / f"{half}_224p.mkv"), "seed": seed, "game": g,
                         "half": half, "half_s": half_s,
                         "events": [dataclasses.asdict(e) for e in plan.events if e.half == half]})
    return plans, jobs


class _Renders:
    """Video rendering in worker processes (`python -m sportray.data.synthetic --render JOBS`),
    started now and waited for later, so other work can overlap. Plain subprocesses work from
    any caller (no multiprocessing main-module import). Workers get whole games."""

    def __init__(self, jobs: list[dict], workers: int):
        self.jobs, self.procs = jobs, []
        self.workers = max(1, min(workers, len({j["game"] for j in jobs})))
        if self.workers <= 1:
            return
        self.tmp = tempfile.TemporaryDirectory(prefix="sportray-synth-")
        for w in range(self.workers):
            f = Path(self.tmp.name) / f"jobs{w}.json"
            f.write_text(json.dumps([j for j in jobs if j["game"] % self.workers == w]))
            err = open(Path(self.tmp.name) / f"err{w}.txt", "w")
            self.procs.append((subprocess.Popen([sys.executable, "-m", "sportray.data.synthetic",
                                                 "--render", str(f)],
                                                stdout=subprocess.DEVNULL, stderr=err), err))

    def wait(self) -> None:
        if self.workers <= 1:
            _run_render_jobs(self.jobs)
            return
        failed = []
        try:
            for proc, err in self.procs:
                proc.wait()
                err.close()
                if proc.returncode != 0:
                    failed.append((proc.returncode, Path(err.name).read_text()[-2000:]))
        finally:
            for proc, err in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                err.close()
            self.tmp.cleanup()
        if failed:
            code, text = failed[0]
            raise RuntimeError(f"synthetic video rendering failed (exit {code}):\n{text}")


def _default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def write_soccernet(root: str | Path, seed: int = 0, n_games: int = DEFAULTS["n_games"],
                    half_s: float = DEFAULTS["half_s"], workers: int | None = None) -> list[GamePlan]:
    """The mini SoccerNet under root (videos + Labels-v2.json); returns the game plans.

    Halves are rendered by `workers` processes (default: up to 4, one per CPU); the output does
    not depend on `workers`.
    """
    plans, jobs = _plan_files(Path(root), seed, n_games, half_s)
    _Renders(jobs, _default_workers() if workers is None else workers).wait()
    return plans


def summary_of(plans: list[GamePlan]) -> dict:
    counts = {c: 0 for c in SOCCER_CLASSES}
    for p in plans:
        for e in p.events:
            counts[e.label] += 1
    return {"games": [p.id for p in plans], "events_per_class": counts}


def write_synthetic(root: str | Path, seed: int = 0, *, n_games: int = DEFAULTS["n_games"],
                    half_s: float = DEFAULTS["half_s"], n_arenas: int = DEFAULTS["n_arenas"],
                    images_per_arena: int = DEFAULTS["images_per_arena"],
                    image_size: tuple[int, int] = DEFAULTS["image_size"],
                    workers: int | None = None) -> Path:
    """Write the whole corpus under root (soccernet/, deepsportradar/, manifest.json).

    Videos render in `workers` processes while this one draws the basketball images. Cost of the
    default on a 2-core machine: ~145 s of CPU, ~77 s wall (~1.25 ms of CPU per video frame,
    drawing plus x264, so ~31 ms per video second; ~35 ms per 640x480 basketball image).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    plans, jobs = _plan_files(root / "soccernet", seed, n_games, half_s)
    renders = _Renders(jobs, _default_workers() if workers is None else workers)
    write_deepsportradar(root / "deepsportradar", seed, n_arenas, images_per_arena, image_size)
    t1 = time.time()
    renders.wait()                     # with workers > 1 the videos rendered meanwhile
    t2 = time.time()
    manifest = {"version": VERSION, "seed": seed,
                "params": {"n_games": n_games, "half_s": half_s, "n_arenas": n_arenas,
                           "images_per_arena": images_per_arena, "image_size": list(image_size)},
                **summary_of(plans), "arenas": arena_names(n_arenas),
                "class_signatures": CLASS_SIGNATURES,
                "seconds": {"deepsportradar": round(t1 - t0, 1), "total": round(t2 - t0, 1)}}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


def _cache_name(seed: int, sizes: dict) -> str:
    name = f"{VERSION}-seed{seed}"
    custom = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sizes.items()
              if k in DEFAULTS and tuple(np.atleast_1d(v)) != tuple(np.atleast_1d(DEFAULTS[k]))}
    if custom:
        name += "-" + hashlib.sha256(json.dumps(custom, sort_keys=True).encode()).hexdigest()[:8]
    return name


def ensure_synthetic(data_dir: str | Path, seed: int = 0, **sizes) -> Path:
    """DATA_DIR/synthetic-v2-seed{seed}: reused when its DONE marker exists, else generated.

    Generation goes to a temporary sibling folder that is renamed into place once complete
    (DONE written last), so an interrupted run never leaves a half corpus behind; leftovers of
    dead runs are removed. Non-default sizes (n_games, half_s, n_arenas, images_per_arena,
    image_size) get their own folder (a hash suffix); `workers` does not change the output.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    name = _cache_name(seed, sizes)
    final = data_dir / name
    if (final / "DONE").is_file():
        return final
    for stale in data_dir.glob(f".{name}.tmp-*"):
        try:
            pid = int(stale.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = data_dir / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_synthetic(tmp, seed, **sizes)
        (tmp / "DONE").write_text(json.dumps({"version": VERSION, "seed": seed, "sizes": sizes}))
        if final.exists() and not (final / "DONE").is_file():
            shutil.rmtree(final, ignore_errors=True)     # an incomplete folder from elsewhere
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "DONE").is_file():        # lost a race with nobody finishing: retry
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="sportray synthetic corpus (internal worker entry)")
    ap.add_argument("--render", help="JSON list of halves to render (used by write_soccernet)")
    args = ap.parse_args(argv)
    if args.render:
        _run_render_jobs(json.loads(Path(args.render).read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
