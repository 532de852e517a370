"""Video to faces: frames, detection, crops, tracks; and the tools that prepare training data.

Imports neither ``training`` nor ``kernels``. The API a notebook or the kernel calls::

    from preprocessing import FaceDetector, crop_faces, find_faces, read_frames
    frames = read_frames("video.mp4", 32)         # evenly spaced RGB frames, by streaming
    faces = find_faces(frames, FaceDetector())    # boxes, landmarks, tracks, 30%-margin crops
    followed = follow_faces(frames.images, FaceDetector())  # per-frame boxes and landmarks by track
"""
from .detect import Detections, FaceDetector
from .faces import Face, find_faces
from .follow import Followed, follow_faces
from .geometry import crop_faces, expand_box, resize_and_pad
from .video import Frames, VideoReadError, find_videos, read_frames

__all__ = [
    "Detections", "Face", "FaceDetector", "Followed", "Frames", "VideoReadError", "crop_faces", "expand_box",
    "find_faces", "find_videos", "follow_faces", "read_frames", "resize_and_pad",
]
