"""Training samples of the world model: clips of frames, actions and hand keypoints from every data source.

Every source is a ``torch.utils.data.Dataset`` of clips with one sample contract::

    {"frames": uint8 (K, H, W, 3)        # K = context_frames + 1 (default 8 + 1), the source's own resolution
     "times": float32 (K,)              # seconds, increasing, relative to the first frame; drawn at IRREGULAR
                                        # intervals inside a window (clip.window_s, default 4 s; consecutive frames
                                        # at least clip.min_gap_s apart), as in the paper
     "actions": float32 (K-1, 132)      # action from frame k to frame k+1 (dexwm_model.actions), expressed in the
                                        # camera frame of frame k
     "keypoints_px": float32 (K, 12, 2) # wrist + 5 fingertips per hand (left then right), pixels (u right, v down)
                                        # of the pinhole projection in the source image (continuous coordinates:
                                        # the image spans [0, W] x [0, H]); 0 where not finite
     "keypoints_valid": bool (K, 12)    # False where outside the image / behind the camera / hand absent /
                                        # low confidence
     "hand_loss": bool                  # False for DROID (dummy gripper keypoints): no hand-consistency loss
     "source": str                      # "sim", "egodex", "droid", "rosbag"
     "episode": str                     # the episode's name inside its dataset
     "image_size": (H, W)               # size of "frames"
     "frame_indices": int64 (K,)}       # which frames of the episode were drawn

Sources (each reads the real on-disk format; ``config/datasets.yaml`` holds every parameter):

* :class:`SimEpisodes` — our ``dexwm-episode`` HDF5 files (``docs/dataset_format.md``), Allegro keypoints stored;
* :class:`EgoDex` — ``<task>/<n>.hdf5`` + ``<n>.mp4`` (ARKit hands, moving camera, 30 Hz);
* :class:`DroidRaw` — raw DROID ``trajectory.h5`` + ``metadata_*.json`` + ``recordings/MP4/<serial>.mp4`` (15 Hz);
* :class:`DroidLeRobot` — the LeRobot port of DROID (parquet + AV1/H.264 MP4, layouts v2.x and v3.x);
* :class:`RosbagEpisodes` — our robot's rosbag2 recordings (MCAP or sqlite3): images + joint states -> FK keypoints;
* :class:`MixedDataset` — weighted, seeded mixing of several of them.

Item ``i`` of a source is a clip of one episode whose frames are drawn with a generator seeded by
``(clip.seed, epoch, i)`` — identical across runs and DataLoader workers; :meth:`ClipDataset.set_epoch` changes the
draw. :class:`ClipTransform` applies the encoder's preprocessing to the frames and maps the keypoints into the crop;
:func:`collate_clips` stacks samples of equal size. :func:`build_datasets` builds what ``datasets.yaml`` names.
Malformed input raises :class:`DatasetFormatError` naming the file and the problem.
"""

from dexwm_model.datasets.base import ClipDataset, EpisodeEntry, LoadedClip
from dexwm_model.datasets.collate import collate_clips
from dexwm_model.datasets.config import (
    ClipConfig,
    DatasetsConfig,
    DroidLeRobotSourceConfig,
    DroidRawSourceConfig,
    EgoDexSourceConfig,
    MixConfig,
    RosbagSourceConfig,
    SimSourceConfig,
    load_datasets_config,
)
from dexwm_model.datasets.droid_lerobot import DroidLeRobot
from dexwm_model.datasets.droid_raw import DroidRaw
from dexwm_model.datasets.egodex import EgoDex
from dexwm_model.datasets.errors import DatasetFormatError
from dexwm_model.datasets.factory import BuiltDatasets, build_datasets
from dexwm_model.datasets.keypoints import HEATMAP_KEYPOINTS_42, NUM_HEATMAP_KEYPOINTS
from dexwm_model.datasets.mixed import MixedDataset
from dexwm_model.datasets.rosbag import RosbagEpisodes
from dexwm_model.datasets.sim import SimEpisodes
from dexwm_model.datasets.transform import ClipTransform

__all__ = [
    "HEATMAP_KEYPOINTS_42",
    "NUM_HEATMAP_KEYPOINTS",
    "BuiltDatasets",
    "ClipConfig",
    "ClipDataset",
    "ClipTransform",
    "DatasetFormatError",
    "DatasetsConfig",
    "DroidLeRobot",
    "DroidLeRobotSourceConfig",
    "DroidRaw",
    "DroidRawSourceConfig",
    "EgoDex",
    "EgoDexSourceConfig",
    "EpisodeEntry",
    "LoadedClip",
    "MixConfig",
    "MixedDataset",
    "RosbagEpisodes",
    "RosbagSourceConfig",
    "SimEpisodes",
    "SimSourceConfig",
    "build_datasets",
    "collate_clips",
    "load_datasets_config",
]
