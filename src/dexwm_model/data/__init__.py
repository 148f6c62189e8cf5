"""Our robot-episode dataset format: one validated HDF5 file per episode (see ``docs/dataset_format.md``)."""

from dexwm_model.data.episode import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SUPPORTED_VERSIONS,
    Episode,
    EpisodeFormatError,
    EpisodeMeta,
    EpisodeReader,
    WriterConfig,
    episode_filename,
    list_episodes,
    read_episode,
    write_episode,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "Episode",
    "EpisodeFormatError",
    "EpisodeMeta",
    "EpisodeReader",
    "WriterConfig",
    "episode_filename",
    "list_episodes",
    "read_episode",
    "write_episode",
]
