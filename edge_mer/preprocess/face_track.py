"""Follow up to ``max_faces`` faces through consecutive frames, each with a stable id.

A full-frame detection runs when nothing is followed, when a face was lost
on the previous frame, and every ``redetect_every`` frames (so a face that
enters the view is picked up). In between, each followed face is searched
only in the region around where it was (``track_margin`` of its side added
on each side), all regions in one batch where the detector allows. Every box
the tracker returns is a real detection in the current frame (nothing is
carried over from an earlier frame), so a frame counts as "face found" only
when the detector found one.

Ids come from IoU association (greedy, best overlap first). A face that is
not found keeps its id for ``keep_lost`` frames: when a detection turns up
near where it was last seen, it gets the old id back (re-identification
after a short occlusion or a missed frame).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_mer.config import require
from edge_mer.preprocess.face_params import MAX_FACES
from edge_mer.preprocess.detection import Detection, FaceDetector, Region, check_frame, iou
from edge_mer.preprocess.face_follow import Template, capture, follow

log = logging.getLogger(__name__)

__all__ = ["MAX_FACES", "FaceTracker", "Primary", "TrackedFace", "iou"]

Primary = Literal["largest", "center"]
#: The primary face changes only when another is this much better (area ratio, or centre distance
#: as a fraction of the frame diagonal): two faces of about the same size must not swap every frame.
_AREA_HYSTERESIS, _CENTER_HYSTERESIS = 1.25, 0.05


@dataclass(frozen=True)
class TrackedFace:
    """One face found in this frame, with its track id."""

    id: int
    detection: Detection

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.detection.box


@dataclass
class _Track:
    id: int
    detection: Detection
    lost: int = 0  # consecutive frames without a detection
    followed: int = 0  # consecutive frames found by template matching since the detector last saw it
    template: Template | None = None


def _near(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """How well a new box ``b`` fits a lost face last seen at ``a``: IoU, or, for boxes that do not overlap
    but whose centres lie within one face side, a small positive score (the face moved while hidden)."""
    overlap = iou(a, b)
    if overlap > 0:
        return overlap
    side = max(a[2], a[3], 1)
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    return 0.01 if (dx * dx + dy * dy) ** 0.5 < side else 0.0


class FaceTracker:
    """The faces in each frame, for frames given in time order (see FaceDetectorOptions.track)."""

    def __init__(self, detector: FaceDetector, max_faces: int = 1, primary: Primary = "largest") -> None:
        require(1 <= max_faces <= MAX_FACES, f"max_faces must be 1..{MAX_FACES}, got {max_faces}")
        require(primary in ("largest", "center"), f"primary must be 'largest' or 'center', got {primary!r}")
        self.detector = detector
        self.options = detector.options
        self.max_faces = max_faces
        self.primary = primary
        # Never below min_size: a region search that cannot find the face would only add cost.
        self.face_px = max(self.options.track_face_px or detector.track_face_px, self.options.min_size)
        self.detect_every = self.options.detect_every or detector.detect_every
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._since_full = 0
        self._primary_id: int | None = None
        self.full_detections = 0
        self.region_searches = 0
        self.template_matches = 0

    def reset(self) -> None:
        """Forget every face (e.g. after a gap in the frames); ids keep counting up."""
        self._tracks, self._since_full, self._primary_id = [], 0, None

    @property
    def primary_id(self) -> int | None:
        """The id of the primary face of the last frame, or None when none was found."""
        return self._primary_id

    @property
    def lost(self) -> list[TrackedFace]:
        """Faces not found in the last frame whose id is still kept, at their last box."""
        return [TrackedFace(t.id, t.detection) for t in self._tracks if t.lost > 0]

    def find(self, frame: np.ndarray) -> Detection | None:
        """The primary face in ``frame``, or None."""
        faces = self.find_all(frame)
        return next((f.detection for f in faces if f.id == self._primary_id), None)

    def find_all(self, frame: np.ndarray) -> list[TrackedFace]:
        """Every followed face found in ``frame`` (at most ``max_faces``), ordered by id."""
        check_frame(frame)
        active = [t for t in self._tracks if t.lost == 0]
        full = not self.options.track or not active or self._since_full >= self.options.redetect_every
        found: dict[int, Detection] = {}
        searched: set[int] = set()
        by_network: set[int] = set()
        if not full:
            self._since_full += 1
            found = self._follow(frame, active)
            due = [t for t in active if t.id not in found]
            found.update(self._search(frame, due))
            searched = {t.id for t in due}
            by_network = set(searched) & set(found)
            # A face left its region: look in the whole frame, this frame. While a lost face's id is kept,
            # look for it every detect_every frames (it may be back).
            lost_due = len(active) < len(self._tracks) and self._since_full >= self.detect_every
            full = len(found) < len(active) or lost_due
        if full:
            self.full_detections += 1
            self._since_full = 0
            fresh = [d for d in self.detector.detect(frame)
                     if all(iou(d.box, f.box) < self.options.match_iou for f in found.values())]
            matched, unmatched = self._associate(fresh, skip=set(found))
            found.update(matched)
            retry = [t for t in active if t.id not in found and t.id not in searched] if self.options.track else []
            retried = self._search(frame, retry)  # small faces the whole-frame pass can miss
            found.update(retried)
            known = {t.id for t in self._tracks}
            self._add_new(unmatched, found)
            by_network |= set(matched) | set(retried) | ({t.id for t in self._tracks} - known)
        for t in self._tracks:
            if t.id in found:
                t.detection, t.lost = found[t.id], 0
                if t.id in by_network:  # a fresh detection: a fresh template
                    t.followed, t.template = 0, capture(frame, t.detection.box) if self.detect_every > 1 else None
                else:
                    t.followed += 1
            else:
                t.lost += 1
        self._tracks = [t for t in self._tracks if t.lost <= self.options.keep_lost]
        faces = [TrackedFace(t.id, t.detection) for t in self._tracks if t.lost == 0]
        self._primary_id = self._choose_primary(faces, frame.shape)
        return faces

    def _associate(self, detections: list[Detection], skip: set[int]) -> tuple[dict[int, Detection], list[Detection]]:
        """Detections matched to known faces not in ``skip`` (id -> detection, best overlap first) and the rest."""
        pairs = []
        for ti, t in enumerate(self._tracks):
            if t.id in skip:
                continue
            for di, d in enumerate(detections):
                # A face found last frame must overlap; a lost one may have moved while hidden.
                score = iou(t.detection.box, d.box) if t.lost == 0 else _near(t.detection.box, d.box)
                if score >= (self.options.match_iou if t.lost == 0 else 0.01):
                    pairs.append((score, ti, di))
        matched: dict[int, Detection] = {}
        used: set[int] = set()
        for _, ti, di in sorted(pairs, key=lambda p: -p[0]):
            tid = self._tracks[ti].id
            if tid not in matched and di not in used:
                matched[tid] = detections[di]
                used.add(di)
        return matched, [d for i, d in enumerate(detections) if i not in used]

    def _add_new(self, detections: list[Detection], found: dict[int, Detection]) -> None:
        """New tracks for unmatched detections, while fewer than ``max_faces`` faces are followed."""
        room = self.max_faces - len(found)
        strong = [d for d in detections if d.score >= self.options.new_face_score]
        for d in sorted(strong, key=lambda d: (-d.area, -d.score))[:max(0, room)]:
            track = _Track(self._next_id, d, lost=0)
            self._next_id += 1
            self._tracks.append(track)
            found[track.id] = d
        while len(self._tracks) > MAX_FACES * 2:  # bound the lost faces kept too
            self._tracks.remove(max((t for t in self._tracks if t.lost > 0), key=lambda t: t.lost))

    def _follow(self, frame: np.ndarray, tracks: list[_Track]) -> dict[int, Detection]:
        """Faces found again by template matching: those the detector saw fewer than ``detect_every - 1``
        frames ago (see :mod:`edge_mer.preprocess.face_follow`)."""
        out = {}
        for t in tracks:
            if t.template is not None and t.followed + 1 < self.detect_every:
                self.template_matches += 1
                moved = follow(frame, t.template, t.detection)
                if moved is not None:
                    out[t.id] = moved
        return out

    def _search(self, frame: np.ndarray, tracks: list[_Track]) -> dict[int, Detection]:
        """Each track's face searched near its last box (one batch); id -> the detection that fits best."""
        regions = [(t, r) for t in tracks if (r := self._region(frame, t.detection)) is not None]
        if not regions:
            return {}
        self.region_searches += len(regions)
        results = self.detector.search(frame, [r for _, r in regions], self.face_px)
        out: dict[int, Detection] = {}
        for (t, _), faces in zip(regions, results):
            faces = [d for d in faces if min(d.box[2], d.box[3]) >= self.options.min_size]
            best = max(faces, key=lambda d: (iou(t.detection.box, d.box), d.score), default=None)
            if best is not None and iou(t.detection.box, best.box) > 0:
                out[t.id] = best
        return out

    def _region(self, frame: np.ndarray, last: Detection) -> Region | None:
        x, y, w, h = last.box
        side = max(w, h)
        pad = int(round(side * self.options.track_margin))
        fh, fw = frame.shape[:2]
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(fw, x + w + pad), min(fh, y + h + pad)
        if x1 - x0 < side // 2 or y1 - y0 < side // 2:
            return None  # the face has left the frame
        return Region(x0, y0, x1, y1, side)

    def _choose_primary(self, faces: list[TrackedFace], shape: tuple[int, ...]) -> int | None:
        if not faces:
            return None
        if self.primary == "largest":
            def merit(f: TrackedFace) -> float:
                return float(f.detection.area)
        else:
            fh, fw = shape[:2]
            diagonal = float(np.hypot(fw, fh))

            def merit(f: TrackedFace) -> float:
                x, y, w, h = f.box
                return -float(np.hypot(x + w / 2 - fw / 2, y + h / 2 - fh / 2)) / diagonal
        best = max(faces, key=merit)
        current = next((f for f in faces if f.id == self._primary_id), None)
        if current is None or current.id == best.id:
            return best.id
        if self.primary == "largest":
            return best.id if merit(best) > merit(current) * _AREA_HYSTERESIS else current.id
        return best.id if merit(best) - merit(current) > _CENTER_HYSTERESIS else current.id

