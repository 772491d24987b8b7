"""edge-mer info's readiness report: every optional part, real checks on this host, and a host without cv2."""
from __future__ import annotations

import json
import subprocess
import sys

from edge_mer.cli.readiness import CHECKS, Part, camera_kinds, readiness

PARTS = ("opencv", "brainflow", "liblsl", "pyaudio", "tensorrt", "pycuda", "tegrastats")


def test_every_part_of_the_issue_is_checked_with_a_fix_when_missing() -> None:
    report = readiness()
    assert tuple(report) == PARTS == tuple(CHECKS)
    for name, part in report.items():
        assert set(part) == {"name", "ok", "detail", "fix"} and part["name"] == name
        assert part["detail"] and "\n" not in part["detail"]
        if not part["ok"]:
            assert part["fix"], name


def test_this_host_has_opencv_brainflow_and_liblsl_and_no_tensorrt() -> None:
    report = readiness()
    assert report["opencv"]["ok"] and "camera kinds: index, node, file, url" in report["opencv"]["detail"]
    assert report["brainflow"]["ok"] and report["brainflow"]["detail"].startswith("native library 5.")
    assert report["liblsl"]["ok"]
    assert not report["tensorrt"]["ok"] and "python3-libnvinfer" in report["tensorrt"]["fix"]


def test_camera_kinds_follow_the_opencv_backends() -> None:
    assert camera_kinds({"GSTREAMER": False, "FFMPEG": True, "V4L2": True}) == {
        "index": True, "node": True, "file": True, "url": True, "pipeline": False}
    assert camera_kinds({"GSTREAMER": True, "FFMPEG": False, "V4L2": False}) == dict.fromkeys(
        ("index", "node", "file", "url", "pipeline"), True)
    assert not any(camera_kinds({"GSTREAMER": False, "FFMPEG": False, "V4L2": False}).values())


def test_part_line_names_the_fix() -> None:
    assert Part("x", False, "gone", "do this").line() == "  MISSING x: gone -> fix: do this"
    assert Part("x", True, "here").line() == "  ok      x: here"


_NO_CV2 = "import sys; sys.modules['cv2'] = None; from edge_mer.cli.main import main; sys.exit(main(sys.argv[1:]))"


def test_without_cv2_info_reports_it_and_a_face_run_is_one_line(tmp_path) -> None:
    info = subprocess.run([sys.executable, "-c", _NO_CV2, "info", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert info.returncode == 0, info.stderr
    part = json.loads(info.stdout)["readiness"]["opencv"]
    assert part["ok"] is False and "edge-mer[opencv]" in part["fix"]
    run = subprocess.run([sys.executable, "-c", _NO_CV2, "run", "--rate-hz", "1", "--duration", "2"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-mer: error: OpenCV (cv2) is needed"), run.stderr
    assert "python3-opencv" in lines[0]
