"""The paper's 21-keypoint hand layout and how the Allegro hand fills it.

Layout (MANO-style ordering used by DexWM): index 0 is the wrist, then for each finger in the order thumb,
index, middle, ring, little: knuckle, intermediate base, intermediate tip, tip (4 points each).
The Allegro has four fingers (``th, ff, mf, rf``); its ring finger is duplicated as the little finger.
The 12 heat-map keypoints of the hand-consistency loss are the wrist and the five tips of each hand.
"""

from __future__ import annotations

HAND_FINGERS_21 = ("thumb", "index", "middle", "ring", "little")
FINGER_PARTS = ("knuckle", "ibase", "itip", "tip")
NUM_HAND_KEYPOINTS = 21
NUM_KEYPOINTS = 2 * NUM_HAND_KEYPOINTS  # left hand, then right hand, in the action vector

# the 17 distinct points the Allegro model carries (MuJoCo sites, prefixed "allegro/" in the composed scene)
ALLEGRO_FINGER_OF = {"thumb": "th", "index": "ff", "middle": "mf", "ring": "rf", "little": "rf"}
ALLEGRO_KEYPOINT_SITES = ("wrist",) + tuple(
    f"{f}_{part}" for f in ("th", "ff", "mf", "rf") for part in FINGER_PARTS
)
# position in ALLEGRO_KEYPOINT_SITES of each of the 21 layout points (ring duplicated as little)
ALLEGRO_TO_HAND21 = (0,) + tuple(
    ALLEGRO_KEYPOINT_SITES.index(f"{ALLEGRO_FINGER_OF[finger]}_{part}")
    for finger in HAND_FINGERS_21
    for part in FINGER_PARTS
)
# wrist + 5 fingertips, as positions in the 21-point layout
HEATMAP_KEYPOINTS_21 = (0, 4, 8, 12, 16, 20)
WRIST_AND_TIPS_ALLEGRO = tuple(ALLEGRO_KEYPOINT_SITES.index(s) for s in ("wrist", "th_tip", "ff_tip", "mf_tip", "rf_tip"))
