"""Camera sources without ROS: a RealSense colour stream, a video file, a folder of images
(:func:`make_source` picks one from the camera node's parameters)."""

from dexwm_hw.cameras.base import CameraError, CameraNotFound, EndOfStream, Frame, FrameSource, Intrinsics, pinhole
from dexwm_hw.cameras.files import ImageFolderSource, VideoFileSource
from dexwm_hw.cameras.realsense import NO_DEVICE, RealSenseSource

SOURCES = ("realsense", "video", "folder")


def make_source(source: str, path: str = "", fps: float = 30.0, loop: bool = False, width: int = 640,
                height: int = 480, serial: str = "", camera_matrix=(0.0, 0.0, 0.0, 0.0),
                fovy_deg: float = 60.0) -> FrameSource:
    """The source named ``source`` (one of ``SOURCES``), not yet opened."""
    if source == "realsense":
        return RealSenseSource(width=width, height=height, fps=fps, serial=serial)
    if source in ("video", "folder") and not path:
        raise ValueError(f"path: the {source} source needs a {'video file' if source == 'video' else 'folder'}")
    if source == "video":
        return VideoFileSource(path, fps=fps, loop=loop, camera_matrix=camera_matrix, fovy_deg=fovy_deg)
    if source == "folder":
        return ImageFolderSource(path, fps=fps, loop=loop, camera_matrix=camera_matrix, fovy_deg=fovy_deg)
    raise ValueError(f"source: expected one of {list(SOURCES)}, got {source!r}")


__all__ = ["NO_DEVICE", "SOURCES", "CameraError", "CameraNotFound", "EndOfStream", "Frame", "FrameSource",
           "ImageFolderSource", "Intrinsics", "RealSenseSource", "VideoFileSource", "make_source", "pinhole"]
