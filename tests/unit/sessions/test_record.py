"""SessionRecorder: record replayed chunks, replay the recording, compare; timing rules; refusals."""
from __future__ import annotations

import heapq
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_mer.errors import ConfigError, InputError
from edge_mer.sessions import FORMAT, SessionRecorder, load_session
from edge_mer.sources.base import Chunk, StreamInfo

sys.path.insert(0, str(Path(__file__).parent))
from conftest import replay_all  # noqa: E402
from test_replay import CHANNELS, make_session  # noqa: E402

VIDEO = StreamInfo("face", 10.0)


@pytest.mark.parametrize("eeg_stamps", [True, False])
def test_recorded_chunks_replay_back_the_same(tmp_path: Path, eeg_stamps: bool) -> None:
    make_session(tmp_path / "in", audio="stereo", eeg_stamps=eeg_stamps, rate=250)
    offset = 123_456_789_000
    original, infos = replay_all(tmp_path / "in", offset)
    merged = heapq.merge(*([(c, m) for c in chunks] for m, chunks in original.items()), key=lambda x: x[0].t_ns)
    with SessionRecorder(tmp_path / "out", start_ns=offset, extra={"device": "test"}) as rec:
        for chunk, modality in merged:
            rec.add(modality, chunk, infos[modality])
    data = json.loads((tmp_path / "out" / "session.json").read_text())
    assert data.pop("recording")["complete"] is True
    assert data == {"format": FORMAT, "video": "video.avi", "audio": "audio.wav", "eeg": "eeg.csv",
                    "eeg_sampling_rate": 250, "device": "test"}
    assert rec.session == load_session(tmp_path / "out")

    again, infos2 = replay_all(tmp_path / "out")
    assert abs(len(again["face"]) - len(original["face"])) <= 1
    assert infos2["face"].rate == pytest.approx(infos["face"].rate)
    np.testing.assert_array_equal(np.concatenate([c.data for c in again["speech"]]),
                                  np.concatenate([c.data for c in original["speech"]]))
    assert infos2["speech"].rate == infos["speech"].rate
    np.testing.assert_array_equal(np.concatenate([c.data for c in again["eeg"]], axis=1),
                                  np.concatenate([c.data for c in original["eeg"]], axis=1))
    assert infos2["eeg"].channel_names == CHANNELS and infos2["eeg"].rate == pytest.approx(250)
    # chunk times survive: EEG by its timestamp column, video by index / fps
    newest = {c.meta["sample_index"]: c.meta["session_t"] for c in original["eeg"]}
    for chunk in again["eeg"]:
        assert chunk.meta["session_t"] == pytest.approx(newest[chunk.meta["sample_index"]], abs=1e-6)
    assert [c.meta["session_t"] for c in again["face"]] == pytest.approx(
        [c.meta["session_t"] for c in original["face"]][:len(again["face"])])


def _frame(level: int) -> np.ndarray:
    return np.full((24, 32, 3), level, dtype=np.uint8)


def test_irregular_frames_are_duplicated_or_dropped_to_keep_index_over_fps(tmp_path: Path) -> None:
    times = [0.0, 0.1, 0.12, 0.31, 0.52]  # slots at 10 fps: 0, 1, 1 (taken: dropped), 3, 5
    with SessionRecorder(tmp_path / "s") as rec:
        for i, t in enumerate(times):
            rec.add("face", Chunk(int(1e9 + t * 1e9), _frame(40 * i)), VIDEO)
    assert rec.counts["face"] == 6
    chunks, _ = replay_all(tmp_path / "s")
    levels = [round(float(c.data.mean()) / 40) for c in chunks["face"]]
    assert levels == [0, 1, 1, 3, 3, 4]  # slot 2 holds frame 1, slot 4 holds frame 3


def test_grey_frames_are_stored_as_bgr_and_a_late_first_frame_fills_the_start(tmp_path: Path) -> None:
    with SessionRecorder(tmp_path / "s", start_ns=0) as rec:
        rec.add("face", Chunk(200_000_000, np.full((24, 32), 100, np.uint8)), VIDEO)
        rec.add("face", Chunk(-100_000_000, _frame(0)), VIDEO)  # before the start: dropped
    chunks, _ = replay_all(tmp_path / "s")
    assert len(chunks["face"]) == 3 and chunks["face"][0].data.shape == (24, 32, 3)


def test_audio_gaps_become_silence_and_jitter_is_ignored(tmp_path: Path) -> None:
    info = StreamInfo("speech", 16000.0)
    ones = np.ones(320, dtype=np.float32)
    with SessionRecorder(tmp_path / "s", start_ns=0, audio_subtype="PCM_16") as rec:
        rec.add("speech", Chunk(int(0.04 * 1e9), ones * 0.5), info)  # samples 321..640: 321 zeros first
        rec.add("speech", Chunk(int(0.065 * 1e9), ones * 0.5), info)  # due at 721, 5 ms after 641: jitter, appended
        rec.add("speech", Chunk(int(0.5 * 1e9), ones * 0.25), info)  # > 0.1 s late: silence inserted
    audio, rate = sf.read(tmp_path / "s" / "audio.wav", dtype="float32")
    assert rate == 16000 and sf.info(tmp_path / "s" / "audio.wav").subtype == "PCM_16"
    first_late = round(0.5 * 16000) - 319
    assert audio.shape == (first_late + 320,)
    assert not audio[:321].any() and (audio[321:961] == 0.5).all()
    assert not audio[961:first_late].any() and (audio[first_late:] == 0.25).all()


def test_eeg_rows_carry_per_sample_timestamps(tmp_path: Path) -> None:
    info = StreamInfo("eeg", 100.0, channel_names=("Fz", "Cz"))
    data = np.arange(20, dtype=np.float64).reshape(2, 10) + 0.1
    with SessionRecorder(tmp_path / "s") as rec:
        rec.add("eeg", Chunk(5 * 10**9, data), info)  # start = oldest sample
        rec.add("eeg", Chunk(5 * 10**9 + 100_000_000, data * 2), info)
    lines = (tmp_path / "s" / "eeg.csv").read_text().splitlines()
    assert lines[0] == "Fz,Cz,timestamp" and len(lines) == 21
    assert lines[1] == "0.1,10.1,0.0" and lines[10].endswith(",0.09") and lines[20].endswith(",0.19")
    assert json.loads((tmp_path / "s" / "session.json").read_text())["eeg_sampling_rate"] == 100


def test_refuses_any_existing_path_and_creates_a_new_directory(tmp_path: Path) -> None:
    make_session(tmp_path / "old")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("kept")
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    for name in ("old", "other", "file", "link"):
        before = sorted(p.name for p in tmp_path.rglob("*"))
        with pytest.raises(ConfigError, match=f"record directory .*{name} already exists: expected a new path"):
            SessionRecorder(tmp_path / name)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    with SessionRecorder(tmp_path / "empty"):  # an empty directory is as good as a new path
        pass
    assert (tmp_path / "empty" / "session.json").is_file()
    with SessionRecorder(tmp_path / "runs" / "new"):
        assert json.loads((tmp_path / "runs" / "new" / "session.json").read_text()) == {
            "format": FORMAT, "recording": {"complete": False}}  # written when recording starts
    assert json.loads((tmp_path / "runs" / "new" / "session.json").read_text()) == {
        "format": FORMAT, "recording": {"complete": True}}
    with pytest.raises(ConfigError, match="already exists"):
        SessionRecorder(tmp_path / "runs" / "new")


def test_bad_chunks_are_refused(tmp_path: Path) -> None:
    with SessionRecorder(tmp_path / "s") as rec:
        with pytest.raises(InputError, match="with a 'face' StreamInfo"):
            rec.add("speech", Chunk(0, np.zeros(10, np.float32)), VIDEO)
        with pytest.raises(InputError, match="dtype float32: expected uint8"):
            rec.add("face", Chunk(0, np.zeros((4, 4, 3), np.float32)), VIDEO)
        rec.add("eeg", Chunk(0, np.zeros((2, 5))), StreamInfo("eeg", 100.0, ("Fz", "Cz")))
        with pytest.raises(InputError, match="eeg stream changed from 100 Hz"):
            rec.add("eeg", Chunk(0, np.zeros((2, 5))), StreamInfo("eeg", 250.0, ("Fz", "Cz")))
    with pytest.raises(Exception, match="is closed"):
        rec.add("eeg", Chunk(0, np.zeros((2, 5))), StreamInfo("eeg", 100.0, ("Fz", "Cz")))


def test_eeg_arrival_jitter_never_makes_times_go_backwards(tmp_path: Path) -> None:
    info = StreamInfo("eeg", 250.0, ("Fz", "Cz"))
    with SessionRecorder(tmp_path / "rec", start_ns=0) as rec:
        # The second chunk arrives 20 us "early": its newest-sample time implies an overlap with the first.
        rec.add("eeg", Chunk(int(0.5 * 1e9), np.ones((2, 100))), info)
        rec.add("eeg", Chunk(int(0.9 * 1e9) - 20_000, np.ones((2, 100))), info)
    times = np.genfromtxt(tmp_path / "rec" / "eeg.csv", delimiter=",", names=True)["timestamp"]
    assert len(times) == 200 and np.all(np.diff(times) > 0)
    np.testing.assert_allclose(np.diff(times), 1 / 250.0, atol=1e-9)
    assert load_session(tmp_path / "rec").eeg_sampling_rate == 250


def _json(root: Path) -> dict:
    return json.loads((root / "session.json").read_text())


def test_session_json_is_written_at_the_start_and_as_each_stream_appears(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    rec = SessionRecorder(root, start_ns=10**9, extra={"device": "test"})
    assert _json(root) == {"format": FORMAT, "device": "test", "recording": {"complete": False}}
    rec.add("eeg", Chunk(10**9 + 36_000_000, np.ones((2, 10))), StreamInfo("eeg", 250.0, ("Fz", "Cz")))
    data = _json(root)
    assert data["eeg"] == "eeg.csv" and data["eeg_sampling_rate"] == 250 and "video" not in data
    assert data["recording"]["complete"] is False and data["recording"]["start_unix_s"] > 1e9
    for i in range(5):
        rec.add("face", Chunk(10**9 + i * 100_000_000, _frame(40 * i)), VIDEO)
    rec.add("speech", Chunk(10**9 + 19_937_500, np.full(320, 0.5, np.float32)), StreamInfo("speech", 16000.0))
    data = _json(root)
    assert (data["video"], data["audio"], data["recording"]["complete"]) == ("video.avi", "audio.wav", False)
    assert sorted(p.name for p in root.iterdir()) == ["audio.wav", "eeg.csv", "session.json", "video.avi"]
    # Before close (as after a kill): every file replays up to what was added.
    chunks, infos = replay_all(root)
    assert len(chunks["face"]) == 5 and "frame count unknown" in infos["face"].description
    assert sum(c.data.size for c in chunks["speech"]) == 320 and sum(c.data.shape[1] for c in chunks["eeg"]) == 10
    rec.close()
    assert _json(root)["recording"]["complete"] is True
    chunks, infos = replay_all(root)
    assert len(chunks["face"]) == 5 and "5 frames" in infos["face"].description
    assert [round(float(c.data.mean()) / 40) for c in chunks["face"]] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("fps", [15.0, 29.97])
def test_mjpeg_avi_is_readable_without_its_index_and_complete_after_close(tmp_path: Path, fps: float) -> None:
    import cv2

    from edge_mer.sessions.avi import MjpegAviWriter

    writer = MjpegAviWriter(tmp_path / "v.avi", (32, 24), fps)
    for i in range(7):
        writer.write(_frame(30 * i))
    writer.repeat()
    (tmp_path / "cut.avi").write_bytes((tmp_path / "v.avi").read_bytes())  # the file as a kill would leave it
    writer.close()
    for name, count in (("cut.avi", 0), ("v.avi", 8)):
        cap = cv2.VideoCapture(str(tmp_path / name))
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(fps, abs=1e-3)
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == count
        levels = []
        while (got := cap.read())[0]:
            levels.append(round(float(got[1].mean()) / 30))
        cap.release()
        assert levels == [0, 1, 2, 3, 4, 5, 6, 6]
    with pytest.raises(Exception, match="closed"):
        writer.repeat()
