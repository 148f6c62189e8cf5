"""ROS side of the bag library (imports rclpy): QoS profiles between rclpy and the bag's recorded form.

The recorder stores the QoS each publisher offered (``rosbags.interfaces.Qos``, written to ``metadata.yaml`` as
``offered_qos_profiles``) and subscribes with a profile compatible with all of them; replay publishes with the
recorded profile, so latched topics (``/tf_static``, ``/robot_description``) stay latched.
"""

from __future__ import annotations

from typing import Sequence

from rclpy.duration import Duration
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

_INFINITE = QosTime(2147483647, 4294967295)  # how rosbag2 writes an infinite duration
_MAX_SEC = 2147483647


def _to_time(duration: Duration) -> QosTime:
    ns = int(duration.nanoseconds)
    sec, nsec = divmod(ns, 1_000_000_000)
    return _INFINITE if sec >= _MAX_SEC else QosTime(sec, nsec)


def _from_time(value: QosTime) -> Duration:
    if (value.sec, value.nsec) == tuple(_INFINITE) or value.sec >= _MAX_SEC:
        return Duration()  # rclpy: 0 = the policy's default (infinite)
    return Duration(seconds=value.sec, nanoseconds=value.nsec)


def bag_qos(profile: QoSProfile) -> Qos:
    """rclpy's profile (e.g. an endpoint's offered QoS) as the bag records it."""
    return Qos(history=QosHistory[profile.history.name], depth=int(profile.depth),
               reliability=QosReliability[profile.reliability.name], durability=QosDurability[profile.durability.name],
               deadline=_to_time(profile.deadline), lifespan=_to_time(profile.lifespan),
               liveliness=QosLiveliness[profile.liveliness.name],
               liveliness_lease_duration=_to_time(profile.liveliness_lease_duration),
               avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions))


def replay_qos(recorded: Sequence[Qos], depth: int) -> QoSProfile:
    """The profile to republish a topic with: the first recorded publisher's reliability and durability (reliable
    and volatile when none was recorded), keep-last ``depth`` (at least the recorded depth for latched topics)."""
    if not recorded:
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    first = recorded[0]
    durability = DurabilityPolicy[first.durability.name]
    reliability = ReliabilityPolicy[first.reliability.name]
    if durability not in (DurabilityPolicy.VOLATILE, DurabilityPolicy.TRANSIENT_LOCAL):
        durability = DurabilityPolicy.VOLATILE
    if reliability not in (ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT):
        reliability = ReliabilityPolicy.RELIABLE
    keep = max(depth, first.depth) if durability == DurabilityPolicy.TRANSIENT_LOCAL else depth
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=keep, reliability=reliability, durability=durability,
                      liveliness=LivelinessPolicy.AUTOMATIC, lifespan=_from_time(first.lifespan),
                      deadline=_from_time(first.deadline))


def subscription_qos(offered: Sequence[QoSProfile], depth: int) -> QoSProfile:
    """A subscription profile that matches every offered one and keeps what they keep: reliable only when all
    publishers are reliable, transient-local (late joiners get latched messages) only when all are."""
    reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
    latched = bool(offered) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
    keep = max([depth] + [int(p.depth) for p in offered]) if latched else depth
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=keep,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
