"""Recording frames: the camera image (left) and the goal image (right) side by side, a caption below.

On the camera image: the hand keypoints the world model predicts for the best plan (filled dots, one colour per
plan step, yellow = the waypoint executed now) and the projected forward kinematics of the first waypoint
(hollow circles); on the goal image: the goal's hand keypoints the planner aims at (cyan). Keypoints live in
the model's input image (the encoder's crop) and are mapped back to camera pixels.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

STEP_COLOURS = ((255, 230, 0), (255, 140, 0), (255, 40, 40), (200, 0, 200), (120, 0, 255))
GOAL_COLOUR = (0, 230, 255)
FK_COLOUR = (255, 255, 255)
CAPTION_PX = 14


class FrameRecorder:
    """``recorder(image, goal_image, step, text) -> frame`` (uint8 RGB); ``mpc`` (optional) maps keypoints."""

    def __init__(self, mpc=None, radius_px: int = 3) -> None:
        self.mpc = mpc
        self.radius = int(radius_px)

    def _points(self, uv, hw) -> list[tuple[float, float]]:
        if uv is None or self.mpc is None:
            return []
        pts = self.mpc.keypoints_to_image(np.asarray(uv, dtype=np.float64).reshape(-1, 2), hw)
        return [(float(u), float(v)) for u, v in pts if math.isfinite(u) and math.isfinite(v)]

    def _dot(self, draw: ImageDraw.ImageDraw, p, colour, fill: bool, dx: int = 0) -> None:
        r = self.radius
        box = (p[0] - r + dx, p[1] - r, p[0] + r + dx, p[1] + r)
        if fill:
            draw.ellipse(box, fill=colour, outline=(0, 0, 0))
        else:
            draw.ellipse(box, outline=colour)

    def __call__(self, image: np.ndarray, goal_image: np.ndarray, step, text: str) -> np.ndarray:
        h1, w1 = image.shape[:2]
        h2, w2 = goal_image.shape[:2]
        canvas = Image.new("RGB", (w1 + w2, max(h1, h2) + CAPTION_PX), (0, 0, 0))
        canvas.paste(Image.fromarray(image), (0, 0))
        canvas.paste(Image.fromarray(goal_image), (w1, 0))
        draw = ImageDraw.Draw(canvas)
        if step is not None and step.predicted_keypoints is not None:
            kp = np.asarray(step.predicted_keypoints)
            for s in range(kp.shape[0] - 1, -1, -1):  # the executed step drawn last (on top)
                for p in self._points(kp[s], (h1, w1)):
                    self._dot(draw, p, STEP_COLOURS[min(s, len(STEP_COLOURS) - 1)], fill=True)
        if step is not None and step.info.get("fk_keypoints"):
            for p in self._points(step.info["fk_keypoints"][0], (h1, w1)):
                self._dot(draw, p, FK_COLOUR, fill=False)
        if self.mpc is not None and getattr(self.mpc, "goal_keypoints", None) is not None:
            for p in self._points(self.mpc.goal_keypoints, (h2, w2)):
                self._dot(draw, p, GOAL_COLOUR, fill=True, dx=w1)
        draw.text((3, max(h1, h2) + 1), text, fill=(255, 255, 255))
        return np.asarray(canvas, dtype=np.uint8)
