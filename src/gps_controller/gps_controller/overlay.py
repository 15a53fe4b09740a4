"""RViz overlay of the CNN's feature points: drawn on the camera image and as a MarkerArray.

Feature points come from the spatial softmax as (x, y) in [-1, 1] over the image (x to the right,
y down), one per channel of the last convolution.
"""

from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray


def point_colors(n: int) -> np.ndarray:
    """(n, 3) distinct uint8 RGB colours (evenly spaced hues)."""
    hues = np.arange(n) / max(n, 1)
    h6 = hues * 6.0
    c = np.stack([np.abs(h6 - 3) - 1, 2 - np.abs(h6 - 2), 2 - np.abs(h6 - 4)], axis=1)
    return (np.clip(c, 0, 1) * 255).astype(np.uint8)


def feature_points_to_pixels(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, 2) points in [-1, 1] -> (K, 2) integer pixel (col, row), clipped to the image."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    cols = np.rint((pts[:, 0] + 1.0) * 0.5 * (width - 1))
    rows = np.rint((pts[:, 1] + 1.0) * 0.5 * (height - 1))
    out = np.stack([cols, rows], axis=1)
    out = np.nan_to_num(out, nan=0.0)
    out[:, 0] = np.clip(out[:, 0], 0, width - 1)
    out[:, 1] = np.clip(out[:, 1], 0, height - 1)
    return out.astype(np.intp)


def draw_feature_points(image: np.ndarray, points: np.ndarray, radius: int | None = None) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 image with a filled square of a distinct colour at each point."""
    out = np.array(image, dtype=np.uint8, copy=True)
    h, w = out.shape[:2]
    if radius is None:
        radius = max(1, min(h, w) // 64)
    pix = feature_points_to_pixels(points, h, w)
    for (col, row), color in zip(pix, point_colors(len(pix)), strict=True):
        out[max(0, row - radius):row + radius + 1, max(0, col - radius):col + radius + 1] = color
    return out


def feature_point_markers(points: np.ndarray, frame_id: str, stamp, hfov_deg: float = 57.0,
                          aspect: float = 1.0, depth: float = 1.0) -> MarkerArray:
    """A POINTS marker placing each feature point on the plane ``depth`` m ahead of the camera
    (optical frame: z forward, x right, y down)."""
    pts = np.nan_to_num(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    tx = math.tan(math.radians(hfov_deg) / 2.0) * depth
    ty = tx / aspect
    marker = Marker()
    marker.header.frame_id = frame_id
    marker.header.stamp = stamp
    marker.ns = "gps_feature_points"
    marker.id = 0
    marker.type = Marker.POINTS
    marker.action = Marker.ADD
    marker.pose.orientation.w = 1.0
    marker.scale.x = marker.scale.y = 0.02 * depth
    for (x, y), c in zip(pts, point_colors(len(pts)), strict=True):
        marker.points.append(Point(x=float(x * tx), y=float(y * ty), z=float(depth)))
        marker.colors.append(ColorRGBA(r=c[0] / 255.0, g=c[1] / 255.0, b=c[2] / 255.0, a=1.0))
    return MarkerArray(markers=[marker])


def publish_feature_points(overlay_pub, marker_pub, image: np.ndarray, points: np.ndarray, stamp, frame: str,
                           hfov_deg: float) -> None:
    """The overlay image and the markers, each only when someone listens (drawing costs a copy)."""
    if overlay_pub.get_subscription_count() > 0:
        from gps_core.wire import image_to_msg

        overlay_pub.publish(image_to_msg(draw_feature_points(image, points), stamp, frame))
    if marker_pub.get_subscription_count() > 0:
        marker_pub.publish(feature_point_markers(points, frame, stamp, hfov_deg))
