"""Build the demo session shipped in the package: edge_mer/assets/demo_session/.

    .venv/bin/pip install scikit-image        # for this script only (astronaut image)
    apt-get install espeak-ng                 # speech synthesiser
    python training/make_demo_session.py [--out DIR] [--eeg keep|record]

Three files, 8 s each, plus session.json and SOURCES.md:

* ``video.mp4``: scikit-image's ``astronaut`` photograph (NASA, public domain),
  animated with a slow zoom and pan into 120 frames of 320x240 at 15 fps,
  softened slightly (Gaussian blur, sigma 1.2 px: the photo's grain doubles
  the file size), written with OpenCV's ``mp4v`` encoder. Deterministic (pure arithmetic; the
  encoder gives the same bytes for the same OpenCV build).
* ``audio.wav``: English sentences spoken by espeak-ng (voice ``en-us``) at
  22,050 Hz, resampled to 16 kHz with edge-mer's own polyphase resampler,
  padded with silence to 8 s, PCM16 mono. Deterministic for one espeak-ng version.
* ``eeg.csv``: 8 s (2,000 samples at 250 Hz) recorded through BrainFlow from
  ``SYNTHETIC_BOARD``, the 10 EEG channels the default bundle's EEG head reads
  (``Fz C3 Cz C4 Pz Oz F7 F3 F4 F8``), microvolts rounded to 0.01 uV, no
  timestamp column (``eeg_sampling_rate: 250`` in session.json). **Not
  reproducible**: the synthetic board seeds its noise from the clock (two
  recordings differ by up to ~300 uV sample by sample). So ``--eeg keep`` (the
  default) leaves an existing ``eeg.csv`` alone and re-running the script
  changes nothing; ``--eeg record`` records a new one (8.5 s of real time).

No labels: nothing here expresses a known emotion (the astronaut smiles, the
voice is a flat synthetic one, the EEG is a synthetic signal).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_mer.preprocess.resample import resample  # noqa: E402
from edge_mer.sessions.format import load_session, write_session_json  # noqa: E402

log = logging.getLogger("make_demo_session")

SECONDS = 8.0
FPS = 15
SIZE = (320, 240)  # width, height
AUDIO_RATE = 16000
EEG_RATE = 250
EEG_CHANNELS = ("Fz", "C3", "Cz", "C4", "Pz", "Oz", "F7", "F3", "F4", "F8")
VOICE, WPM = "en-us", 150
TEXT = ("Hello. This is the edge M E R demo session. "
        "Camera, microphone and E E G are replayed from files.")
FACE_CENTRE = (225.0, 113.0)  # of the astronaut's face in the 512x512 image (OpenCV's Haar cascade)
MAX_BYTES = 600_000
BLUR_SIGMA = 1.2  # pixels, of the 320x240 frame


def make_video(path: Path) -> dict[str, object]:
    """The astronaut photo under a slow zoom (1.0 -> 1.35 -> 1.0) and a gentle pan, 15 fps."""
    import skimage
    from skimage import data

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    width, height = SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {path} with mp4v")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = 0
    frames = round(SECONDS * FPS)
    for i in range(frames):
        phase = i / frames
        zoom = 1.0 + 0.35 * math.sin(math.pi * phase) ** 2
        scale = 380.0 / width / zoom  # source pixels per output pixel: a 380-wide view zoomed in to ~280
        cx = FACE_CENTRE[0] + 12.0 * math.sin(2 * math.pi * phase)
        cy = FACE_CENTRE[1] + 40.0 - 10.0 * math.sin(2 * math.pi * phase * 1.5)
        # output (u, v) -> source (cx + (u - w/2) * scale, cy + (v - h/2) * scale)
        matrix = np.array([[scale, 0.0, cx - width / 2 * scale], [0.0, scale, cy - height / 2 * scale]])
        frame = cv2.warpAffine(image, matrix, SIZE, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        frame = cv2.GaussianBlur(frame, (0, 0), BLUR_SIGMA)  # film grain costs mp4v bytes: halves the file
        writer.write(frame)
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        found += len(cascade.detectMultiScale(grey, 1.1, 5, minSize=(40, 40))) == 1
    writer.release()
    log.info("video: %d frames, face found by the Haar cascade in %d", frames, found)
    if found < 0.9 * frames:
        raise SystemExit(f"the face is found in only {found} of {frames} frames; adjust the animation")
    return {"frames": frames, "faces_found": found, "skimage": skimage.__version__}


def make_audio(path: Path) -> dict[str, object]:
    """espeak-ng at its native 22,050 Hz -> edge-mer's resampler -> 16 kHz PCM16, padded to 8 s."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(["espeak-ng", "-v", VOICE, "-s", str(WPM), "-w", str(raw), TEXT], check=True)
        speech, rate = sf.read(raw, dtype="float64")
    banner = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"\d+\.\d+(\.\d+)?", banner)
    version = f"espeak-ng {found.group(0) if found else banner.strip()}"
    speech = resample(speech, rate, AUDIO_RATE)
    total = round(SECONDS * AUDIO_RATE)
    lead = round(0.25 * AUDIO_RATE)
    if lead + speech.size > total:
        raise SystemExit(f"speech lasts {speech.size / AUDIO_RATE:.2f} s; shorten TEXT to fit {SECONDS} s")
    out = np.zeros(total)
    out[lead:lead + speech.size] = speech
    sf.write(path, np.clip(out, -1.0, 32767 / 32768), AUDIO_RATE, subtype="PCM_16")
    log.info("audio: %.2f s of speech from %s", speech.size / AUDIO_RATE, version)
    return {"speech_s": round(speech.size / AUDIO_RATE, 2), "espeak": version}


def record_eeg(path: Path) -> None:
    """8 s of BrainFlow SYNTHETIC_BOARD, the 10 named channels, 0.01 uV, no timestamp column."""
    from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams

    board_id = BoardIds.SYNTHETIC_BOARD
    if BoardShim.get_sampling_rate(board_id) != EEG_RATE:
        raise SystemExit(f"SYNTHETIC_BOARD runs at {BoardShim.get_sampling_rate(board_id)} Hz, expected {EEG_RATE}")
    names = BoardShim.get_eeg_names(board_id)
    rows = [BoardShim.get_eeg_channels(board_id)[names.index(name)] for name in EEG_CHANNELS]
    BoardShim.disable_board_logger()
    board = BoardShim(board_id, BrainFlowInputParams())
    board.prepare_session()
    try:
        board.start_stream()
        time.sleep(SECONDS + 0.5)
        data = board.get_board_data()
        board.stop_stream()
    finally:
        board.release_session()
    need = round(SECONDS * EEG_RATE)
    if data.shape[1] < need:
        raise SystemExit(f"the synthetic board gave {data.shape[1]} samples in {SECONDS + 0.5} s, need {need}")
    eeg = np.round(data[rows, :need], 2)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(EEG_CHANNELS)
    writer.writerows(eeg.T.tolist())
    path.write_text(text.getvalue())
    log.info("eeg: recorded %d samples x %d channels from SYNTHETIC_BOARD", need, len(EEG_CHANNELS))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SOURCES_MD = """\
# Demo session: where each file comes from

An 8-second session in the `edge-mer-session/1` format (see
`edge_mer/sessions/format.py`), made by `training/make_demo_session.py`. It
exists so that `edge-mer` can be tried and tested without a camera, microphone
or EEG board. All files may be redistributed with the package.

| file | content | origin | licence |
| --- | --- | --- | --- |
| `video.mp4` | 120 frames, 320x240, 15 fps, `mp4v` | scikit-image's `astronaut` image (`skimage.data.astronaut()`, scikit-image {skimage}): Eileen Collins, NASA photograph, public domain; animated by the script with a slow zoom and pan and softened (Gaussian blur, sigma {blur} px) to keep the file small (OpenCV {opencv}) | image: public domain (NASA); the animation: MIT, as edge-mer |
| `audio.wav` | 8.0 s, 16 kHz, PCM16 mono; {speech_s} s of speech from 0.25 s | synthesised by {espeak}, voice `{voice}`, {wpm} words/min, from the text below, written for this project; resampled 22,050 -> 16,000 Hz by `edge_mer.preprocess.resample` | MIT, as edge-mer (espeak-ng itself is GPL-3.0-or-later; its output is not covered by that licence) |
| `eeg.csv` | 2,000 samples at 250 Hz of `Fz C3 Cz C4 Pz Oz F7 F3 F4 F8`, microvolts rounded to 0.01 uV, no timestamp column | recorded through BrainFlow ({brainflow}) from `SYNTHETIC_BOARD` (a generated test signal, no person involved) | MIT, as edge-mer (BrainFlow: MIT) |
| `session.json` | the file names, `eeg_sampling_rate: 250`, no labels | written by the script | MIT |

Text spoken: "{text}"

**Labels: none.** Nothing in the session expresses a known emotion: the
astronaut smiles in a posed portrait, the synthetic voice is flat, and the EEG
is a synthetic signal. Use the demo to check that the pipeline runs, not to
measure accuracy.

**Reproducibility.** `video.mp4` and `audio.wav` are deterministic (same
OpenCV build and espeak-ng version give the same bytes). `eeg.csv` is not:
BrainFlow's synthetic board seeds its noise from the clock, so the script keeps
the committed file unless run with `--eeg record`.

sha256:

```
{hashes}
```
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "edge_mer" / "assets" / "demo_session")
    parser.add_argument("--eeg", choices=("keep", "record"), default="keep",
                        help="keep an existing eeg.csv (default; recording is not reproducible) or record anew")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    video = make_video(out / "video.mp4")
    audio = make_audio(out / "audio.wav")
    if args.eeg == "record" or not (out / "eeg.csv").is_file():
        record_eeg(out / "eeg.csv")
    else:
        log.info("eeg: keeping %s (use --eeg record to record a new one)", out / "eeg.csv")
    write_session_json(out, video="video.mp4", audio="audio.wav", eeg="eeg.csv", eeg_sampling_rate=EEG_RATE)
    load_session(out)
    from importlib.metadata import version

    files = ("session.json", "video.mp4", "audio.wav", "eeg.csv")
    hashes = "\n".join(f"{sha256(out / name)}  {name}" for name in files)
    (out / "SOURCES.md").write_text(SOURCES_MD.format(
        skimage=video["skimage"], blur=BLUR_SIGMA, opencv=cv2.__version__, speech_s=audio["speech_s"],
        espeak=audio["espeak"], voice=VOICE, wpm=WPM, brainflow=version("brainflow"), text=TEXT, hashes=hashes))
    sizes = {path.name: path.stat().st_size for path in sorted(out.iterdir())}
    log.info("wrote %s: %s (%d bytes in all)", out, json.dumps(sizes), sum(sizes.values()))
    if sum(sizes.values()) > MAX_BYTES:
        raise SystemExit(f"the demo session is {sum(sizes.values())} bytes, over {MAX_BYTES}")


if __name__ == "__main__":
    main()
