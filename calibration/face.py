"""Face readers: image folders (one sub-folder per class), through the runtime's crop preparation."""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import cv2

from edge_mer.errors import InputError
from edge_mer.preprocess.face import FaceParams, prepare_crops
from edge_mer_calibration.samples import Sample

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm")

#: Folder names used by common face datasets (CK+, FER, AffectNet exports) -> canonical labels.
FOLDER_LABELS: dict[str, str] = {
    "anger": "angry", "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
    "happiness": "happy", "sadness": "sad", "sad": "sad", "surprise": "surprise", "neutral": "neutral",
}


def read_face_folder(root: str | Path, params: FaceParams, labels: Mapping[str, str] | None = None
                     ) -> Iterator[Sample]:
    """Already-cropped face images under ``root/<class>/`` as model-ready samples.

    ``labels`` maps folder names to labels (default :data:`FOLDER_LABELS`);
    folders it does not name (e.g. CK+'s ``contempt``) are skipped and logged.
    Files are read in sorted order so runs are reproducible.
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
            yield Sample(prepare_crops([image], params)[0], label, str(path))
