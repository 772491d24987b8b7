"""Face readers: image folders, FER2013 CSV rows and video files, through the runtime's crop preparation.

Every array comes from :func:`edge_mer.preprocess.face.prepare_crops`, the
function the daemon's :class:`~edge_mer.preprocess.face.FacePreprocessor`
ends with; video frames are decoded by the replay source the daemon uses
(:class:`~edge_mer.sessions.replay.VideoReplaySource`) and faces are found
with :func:`~edge_mer.preprocess.face_detect.create_detector` and
:meth:`FacePreprocessor.crops`, so a frame gives the bytes the daemon would
feed the encoder for it.
"""
from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from edge_mer.preprocess.opencv import cv2
import numpy as np

from edge_mer.errors import ConfigError, InputError, SensorError
from edge_mer.preprocess.face import FaceParams, FacePreprocessor, prepare_crops
from edge_mer.bundle import default_bundle_path
from edge_mer.bundle.loader import load_bundle
from edge_mer.pipeline.face_models import build_detector
from edge_mer.preprocess.face_detect import FaceDetectorOptions
from edge_mer.sessions.format import SESSION_JSON, Session, load_session
from edge_mer.sessions.replay import VideoReplaySource
from edge_mer_calibration.samples import Sample

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

#: Folder names used by common face datasets (CK+, FER, AffectNet exports) -> canonical labels.
FOLDER_LABELS: dict[str, str] = {
    "anger": "angry", "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
    "happiness": "happy", "sadness": "sad", "sad": "sad", "surprise": "surprise", "neutral": "neutral",
}

#: FER2013's ``emotion`` ids 0..6, as canonical labels.
FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_SIDE = 48
_CKPLUS_SUBJECT = re.compile(r"^(S\d{3})_")


def _image_group(path: Path) -> str | None:
    """The CK+ subject (``S010`` of ``S010_004_00000017.png``), or None for other names."""
    match = _CKPLUS_SUBJECT.match(path.name)
    return match.group(1) if match else None


def read_face_folder(root: str | Path, params: FaceParams, labels: Mapping[str, str] | None = None
                     ) -> Iterator[Sample]:
    """Already-cropped face images under ``root/<class>/`` as model-ready samples.

    ``labels`` maps folder names to labels (default :data:`FOLDER_LABELS`);
    folders it does not name (e.g. CK+'s ``contempt``) are skipped and logged.
    Files are read in sorted order so runs are reproducible. ``group`` is the
    CK+ subject (``S010``) when file names carry one, else None.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"face folder {root} does not exist")
    labels = FOLDER_LABELS if labels is None else labels
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise InputError(f"face folder {root} has no class sub-folders; expected {root}/<class>/*.png")
    for folder in folders:
        label = labels.get(folder.name)
        if label is None:
            log.info("skipping %s: no label mapping for folder %r", folder, folder.name)
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise InputError(f"cannot decode image {path}")
            if image.ndim == 3 and image.shape[2] == 4:
                image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
            yield Sample(prepare_crops([image], params)[0], label, str(path), _image_group(path))


def fer_image(pixels: str, where: str) -> np.ndarray:
    """A FER2013 ``pixels`` field (2,304 space-separated grey values) as a 48x48 uint8 image."""
    try:
        values = np.array(pixels.split(), dtype=np.int64)
    except ValueError:
        raise InputError(f"{where}: pixels must be integers 0..255 separated by spaces") from None
    if values.size != FER_SIDE * FER_SIDE:
        raise InputError(f"{where}: {values.size} pixel values, expected {FER_SIDE * FER_SIDE} (48x48)")
    if values.min() < 0 or values.max() > 255:
        raise InputError(f"{where}: pixel values span {values.min()}..{values.max()}, expected 0..255")
    return values.astype(np.uint8).reshape(FER_SIDE, FER_SIDE)


def _fer_label(text: str | None, where: str) -> str | None:
    if text is None or not text.strip():
        return None  # FER test files without an emotion column: unlabelled, still usable for calibration
    try:
        index = int(text)
    except ValueError:
        index = -1
    if not 0 <= index < len(FER_LABELS):
        raise InputError(f"{where}: emotion {text!r} is not a FER2013 label id 0..6 "
                         f"({', '.join(f'{i} {n}' for i, n in enumerate(FER_LABELS))})")
    return FER_LABELS[index]


def read_fer_csv(path: str | Path, params: FaceParams, usage: str | None = None) -> Iterator[Sample]:
    """FER2013 rows (``emotion,pixels[,Usage]``) as model-ready samples, in file order.

    Each row's 48x48 grey image goes through :func:`prepare_crops`; label ids
    0..6 become :data:`FER_LABELS` (no ``emotion`` column: label None).
    ``usage`` keeps only rows whose ``Usage`` equals it (e.g. ``"Training"``).
    ``source`` is ``<file>:<line>``; ``group`` is None (FER has no subject ids).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"FER CSV {path} does not exist")
    kept = skipped = 0
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "pixels" not in (reader.fieldnames or []):
            raise InputError(f"{path}: no 'pixels' column (header {reader.fieldnames}); "
                             "expected FER2013 columns emotion,pixels,Usage")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if usage is not None and row.get("Usage") != usage:
                skipped += 1
                continue
            image = fer_image(row["pixels"] or "", where)
            label = _fer_label(row.get("emotion"), where)
            kept += 1
            yield Sample(prepare_crops([image], params)[0], label, f"{path.name}:{reader.line_num}")
    log.info("%s: %d FER rows read, %d skipped (Usage != %r)", path, kept, skipped, usage)


def _enclosing_session(path: Path) -> Session | None:
    """The session whose ``video`` is ``path`` when ``path`` sits in a session directory, else None."""
    if not (path.parent / SESSION_JSON).is_file():
        return None
    try:
        session = load_session(path.parent)
    except ConfigError as exc:
        raise InputError(f"{path.parent / SESSION_JSON}: {exc}") from None
    video = session.path("video")
    if video is None or video.resolve() != path.resolve():
        log.info("%s is not the video of session %s; its labels do not apply", path.name, path.parent)
        return None
    return session


def read_face_video(path: str | Path, params: FaceParams, detector_options: FaceDetectorOptions | None = None,
                    every_n: int = 1, label: str | None = None, bundle: str | Path | None = None) -> Iterator[Sample]:
    """Every ``every_n``-th frame of a video with a face, as the daemon would prepare it.

    Frames are decoded by the daemon's :class:`VideoReplaySource` (frame ``i``
    at ``i / fps`` seconds); the face is chosen by a detector made from
    ``detector_options`` (default: the daemon's, BlazeFace from ``bundle``, the default bundle unless given)
    and cropped by
    :meth:`FacePreprocessor.crops`. Frames without a face are skipped and
    counted in the log. The label is ``label`` when given; otherwise, when the
    video is the ``video`` of a session directory, the session's label at the
    frame's time (frames outside every label are skipped), else None.
    ``source`` is ``<path>#<frame index>``; ``group`` is the session directory name.
    """
    path = Path(path)
    if isinstance(every_n, bool) or not isinstance(every_n, int) or every_n < 1:
        raise InputError(f"every_n must be an integer >= 1, got {every_n!r}")
    if not path.is_file():
        raise InputError(f"video {path} does not exist")
    session = _enclosing_session(path) if label is None else None
    replay = session if session is not None else Session(root=path.parent, video=path.name)
    group = session.root.name if session is not None else None
    options = detector_options or FaceDetectorOptions()
    detector = build_detector(options, load_bundle(bundle or default_bundle_path()))
    pre = FacePreprocessor(params, detector)
    counts = {"faces": 0, "no face": 0, "no label": 0}
    source = VideoReplaySource(replay, pace=False)
    try:
        with source:
            for chunk in source:
                index = chunk.meta["frame_index"]
                if index % every_n:
                    continue
                frame_label = label if session is None else session.label_at(chunk.meta["session_t"])
                if session is not None and frame_label is None:
                    counts["no label"] += 1
                    continue
                crops = pre.crops([chunk.data])
                if not crops:
                    counts["no face"] += 1
                    continue
                counts["faces"] += 1
                yield Sample(prepare_crops(crops, params)[0], frame_label, f"{path}#{index}", group)
    except SensorError as exc:
        raise InputError(f"video {path}: {exc}") from None
    finally:
        detector.close()
    log.info("%s: %s", path, ", ".join(f"{k} {v}" for k, v in counts.items()))
