"""Tests for edge_mer.bench.power on real recorded tegrastats lines, a real child process and a fake sysfs tree."""
from __future__ import annotations

import os
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from edge_mer.bench.power import RaplReader, TegrastatsReader, parse_tegrastats
from edge_mer.errors import InputError, SensorError

# --- Recorded tegrastats lines (verbatim) -------------------------------------------------------
# DD = DataDog/datadog-agent, pkg/collector/corechecks/nvidia/jetson/jetson_test.go
#      (commit 020f92f4a5f629e0838d2f460c371f3e455628cf), constants named after the "# DD" tags.

# Orin family (JetPack 5/6)
# DD voltageUnitSample (Orin, JetPack 5: rails in mW, four cores off)
ORIN_JP5 = "RAM 6334/15388MB (lfb 1770x4MB) SWAP 491/7694MB (cached 0MB) CPU [6%@729,9%@729,5%@729,16%@729,off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@611 VIC_FREQ 729 APE 174 CV0@45.812C CPU@47.937C SOC2@46.093C SOC0@46.968C CV1@46.406C GPU@45.875C tj@48.875C SOC1@48.875C VDD_IN 5299mW/5299mW VDD_CPU_GPU_CV 773mW/773mW VDD_SOC 1424mW/1424mW"
# DD r36Sample (AGX Orin, L4T R36 / JetPack 6: runs of spaces, per-GPC list, no input rail)
ORIN_AGX_R36 = "RAM 29114/30697MB (lfb 3x4MB)    SWAP 4915/15348MB (cached 1MB) CPU [3%@729,4%@729,0%@729,1%@729,0%@2201,100%@2201,1%@2201,0%@2201,100%@2201,0%@2201,0%@2201,0%@2201] EMC_FREQ 1%@2133 GR3D_FREQ 0%@[305,305] NVENC      off  NVDEC    off NVJPG off NVJPG1    off         VIC        off          OFA           off          NVDLA0    off       NVDLA1     off          PVA0_FREQ off         APE           174        cpu@53.062C soc2@48.25C soc0@48.843C  gpu@47.812C tj@53.062C soc1@48.968C    VDD_GPU_SOC 3205mW/3205mW VDD_CPU_CV 4405mW/4405mW VIN_SYS_5V0 4767mW/4767mW"
# GitHub issue GDWR/jetson_exporter#14 ("GPU utilization percentage isn't available", AGX Orin 64GB,
# leading timestamp, sensors at -256C are absent, NC = unconnected monitor channel)
ORIN_AGX_TS = "04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C SOC2@40.093C Tdiode@33C SOC0@41.093C CV1@-256C GPU@-256C tj@44.343C SOC1@41.25C CV2@-256C VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
# Orin Nano (JetPack 6, timestamp, GR3D_FREQ 0%@[305]): test `parses_verbose_off_and_bracket_freqs`
# of a Rust tegrastats parser found through the code search corpus (repository not named by the index).
ORIN_NANO_TS = "11-30-2025 13:26:01 RAM 2461/7620MB (lfb 3x2MB) SWAP 1243/3810MB (cached 5MB) CPU [19%@729,14%@729,22%@729,8%@729,15%@729,17%@729] EMC_FREQ 4%@2133 GR3D_FREQ 0%@[305] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@46.531C soc2@47.312C soc0@46.593C gpu@48.218C tj@48.843C soc1@48.843C VDD_IN 5704mW/5704mW VDD_CPU_GPU_CV 831mW/831mW VDD_SOC 1624mW/1624mW"

# Xavier family (JetPack 4)
# DD agXSample (AGX Xavier, sudo: GR3D_FREQ with @freq)
XAVIER_AGX = "RAM 721/31927MB (lfb 7291x4MB) SWAP 0/15963MB (cached 0MB) CPU [2%@1190,0%@1190,0%@1190,0%@1190,off,off,off,off] EMC_FREQ 0%@665 GR3D_FREQ 0%@318 APE 150 MTS fg 0% bg 0% AO@37.5C GPU@37.5C Tdiode@40C PMIC@100C AUX@36C CPU@37.5C thermal@36.9C Tboard@37C GPU 0/0 CPU 311/311 SOC 932/932 CV 0/0 VDDRQ 621/621 SYS5V 1482/1482"
# GitHub PR martinkersner/gtop#7 ("Added AGX/Xavier support"), comment of 2019-06-17 (no sudo)
XAVIER_AGX_GTOP = "RAM 14700/15692MB (lfb 3x2MB) SWAP 898/8192MB (cached 23MB) CPU [0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190] EMC_FREQ 0% GR3D_FREQ 0% AO@30C GPU@30.5C Tboard@31C Tdiode@32C AUX@30.5C CPU@31.5C thermal@30.8C PMIC@100C GPU 463/463 CPU 618/618 SOC 2936/2936 CV 0/0 VDDRQ 309/309 SYS5V 3306/3306"
# DD xavierNxSample (Xavier NX: has VDD_IN, no mW unit)
XAVIER_NX = "RAM 4412/7772MB (lfb 237x4MB) SWAP 139/3886MB (cached 2MB) CPU [9%@1190,6%@1190,6%@1190,5%@1190,4%@1190,8%@1267] EMC_FREQ 10%@1600 GR3D_FREQ 62%@306 APE 150 MTS fg 0% bg 0% AO@41.5C GPU@43C PMIC@100C AUX@41.5C CPU@43.5C thermal@42.55C VDD_IN 4067/4067 VDD_CPU_GPU_CV 738/738 VDD_SOC 1353/1353"

# Nano / TX family (JetPack 4)
# DD nanoSample (Nano, sudo: IRAM, POM_5V_* rails)
NANO = "RAM 534/3964MB (lfb 98x4MB) SWAP 5/1982MB (cached 1MB) IRAM 0/252kB(lfb 252kB) CPU [16%@204,9%@204,0%@204,0%@204] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@34C CPU@36.5C PMIC@100C GPU@36C AO@39.5C thermal@36.25C POM_5V_IN 1022/1022 POM_5V_GPU 0/0 POM_5V_CPU 204/204"
# DD tx1Sample (TX1: IRAM, VDD_IN current != average)
TX1 = "RAM 1179/3983MB (lfb 120x4MB) IRAM 0/252kB(lfb 252kB) CPU [1%@102,4%@102,0%@102,0%@102] EMC_FREQ 7%@408 GR3D_FREQ 0%@76 APE 25 AO@42.5C CPU@37.5C GPU@39C PLL@37C Tdiode@42.75C PMIC@100C Tboard@42C thermal@38.5C VDD_IN 2532/2698 VDD_CPU 76/178 VDD_GPU 19/19"
# DD tx2Sample (TX2: two Denver cores off)
TX2 = "RAM 2344/7852MB (lfb 1154x4MB) SWAP 0/3926MB (cached 0MB) CPU [1%@345,off,off,1%@345,0%@345,2%@345] EMC_FREQ 4%@1600 GR3D_FREQ 0%@624 APE 150 PLL@37.5C MCPU@37.5C PMIC@100C Tboard@32C GPU@35C BCPU@37.5C thermal@36.5C Tdiode@34.25C VDD_SYS_GPU 152/152 VDD_SYS_SOC 687/687 VDD_4V0_WIFI 0/0 VDD_IN 3056/3056 VDD_SYS_CPU 152/152 VDD_SYS_DDR 883/883"
# GitHub PR henrygd/beszel#1631 ("Jetson tegrastats regex pre jetpack5"), TX2 with mixed core frequencies
TX2_BESZEL = "RAM 3276/7859MB (lfb 5x4MB) SWAP 1626/12122MB (cached 181MB) CPU [44%@1421,49%@2031,67%@2034,17%@1420,25%@1419,8%@1420] EMC_FREQ 1%@1866 GR3D_FREQ 0%@114 APE 150 MTS fg 1% bg 1% PLL@42.5C MCPU@42.5C PMIC@50C Tboard@38C GPU@39.5C BCPU@42.5C thermal@41.3C Tdiode@39.25C VDD_SYS_GPU 182/182 VDD_SYS_SOC 730/730 VDD_4V0_WIFI 0/0 VDD_IN 5297/5297 VDD_SYS_CPU 1917/1917 VDD_SYS_DDR 1241/1241"

ALL_LINES = [ORIN_JP5, ORIN_AGX_R36, ORIN_AGX_TS, ORIN_NANO_TS, XAVIER_AGX, XAVIER_AGX_GTOP, XAVIER_NX,
             NANO, TX1, TX2, TX2_BESZEL]


# --- parse_tegrastats ---------------------------------------------------------------------------

def test_orin_jetpack5_line() -> None:
    s = parse_tegrastats(ORIN_JP5)
    assert (s.ram_used_mb, s.ram_total_mb) == (6334, 15388)
    assert s.cpu_load == (6.0, 9.0, 5.0, 16.0, None, None, None, None)
    assert s.cpu_freq_mhz == 729
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0.0, 611)
    assert s.temps_c["tj"] == 48.875 and s.temps_c["CV0"] == 45.812
    assert s.rails_mw == {"VDD_IN": (5299.0, 5299.0), "VDD_CPU_GPU_CV": (773.0, 773.0), "VDD_SOC": (1424.0, 1424.0)}
    assert s.total_power_mw == 5299.0


def test_agx_orin_r36_line_with_space_runs_and_per_gpc_list() -> None:
    s = parse_tegrastats(ORIN_AGX_R36)
    assert (s.ram_used_mb, s.ram_total_mb) == (29114, 30697)
    assert len(s.cpu_load) == 12 and s.cpu_load[5] == 100.0
    assert s.cpu_freq_mhz == 2201
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0.0, 305)
    assert s.temps_c == {"cpu": 53.062, "soc2": 48.25, "soc0": 48.843, "gpu": 47.812, "tj": 53.062, "soc1": 48.968}
    assert s.rails_mw["VIN_SYS_5V0"] == (4767.0, 4767.0)
    assert s.total_power_mw == 3205 + 4405 + 4767  # no input rail: sum of rails


def test_agx_orin_timestamped_line_drops_absent_sensors_and_nc_rails() -> None:
    s = parse_tegrastats(ORIN_AGX_TS)
    assert (s.ram_used_mb, s.ram_total_mb) == (4321, 62801)
    assert s.cpu_load == (0.0,) * 12
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0.0, 0)
    assert "CV0" not in s.temps_c and "GPU" not in s.temps_c
    assert s.temps_c["CPU"] == 44.562 and s.temps_c["Tboard"] == 32.0
    assert s.rails_mw["NC"] == (0.0, 0.0)
    assert s.total_power_mw == 2340 + 390 + 4025 + 301


def test_orin_nano_timestamped_line() -> None:
    s = parse_tegrastats(ORIN_NANO_TS)
    assert (s.ram_used_mb, s.ram_total_mb) == (2461, 7620)
    assert s.cpu_load == (19.0, 14.0, 22.0, 8.0, 15.0, 17.0)
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0.0, 305)
    assert s.temps_c["soc2"] == 47.312 and s.temps_c["gpu"] == 48.218
    assert s.rails_mw["VDD_CPU_GPU_CV"] == (831.0, 831.0)
    assert s.total_power_mw == 5704.0


def test_agx_xavier_lines_sum_all_rails() -> None:
    s = parse_tegrastats(XAVIER_AGX)
    assert (s.ram_used_mb, s.ram_total_mb) == (721, 31927)
    assert s.cpu_load[:4] == (2.0, 0.0, 0.0, 0.0) and s.cpu_load[4:] == (None,) * 4
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0.0, 318)
    assert s.temps_c["CPU"] == 37.5 and s.temps_c["thermal"] == 36.9
    assert s.rails_mw == {"GPU": (0.0, 0.0), "CPU": (311.0, 311.0), "SOC": (932.0, 932.0), "CV": (0.0, 0.0),
                          "VDDRQ": (621.0, 621.0), "SYS5V": (1482.0, 1482.0)}
    assert s.total_power_mw == 311 + 932 + 621 + 1482

    g = parse_tegrastats(XAVIER_AGX_GTOP)
    assert (g.ram_used_mb, g.ram_total_mb) == (14700, 15692)
    assert g.cpu_freq_mhz == 1190 and len(g.cpu_load) == 8
    assert (g.gpu_load_pct, g.gpu_freq_mhz) == (0.0, None)  # no sudo: no GPU frequency
    assert g.temps_c["GPU"] == 30.5 and g.temps_c["PMIC"] == 100.0
    assert g.rails_mw["SOC"] == (2936.0, 2936.0)
    assert g.total_power_mw == 463 + 618 + 2936 + 0 + 309 + 3306


def test_xavier_nx_uses_vdd_in() -> None:
    s = parse_tegrastats(XAVIER_NX)
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (62.0, 306)
    assert s.cpu_freq_mhz == 1267
    assert s.temps_c["thermal"] == 42.55
    assert s.total_power_mw == 4067.0


def test_nano_and_tx_lines() -> None:
    n = parse_tegrastats(NANO)
    assert (n.ram_used_mb, n.ram_total_mb) == (534, 3964)
    assert n.cpu_load == (16.0, 9.0, 0.0, 0.0) and n.cpu_freq_mhz == 204
    assert (n.gpu_load_pct, n.gpu_freq_mhz) == (0.0, 76)
    assert n.temps_c == {"PLL": 34.0, "CPU": 36.5, "PMIC": 100.0, "GPU": 36.0, "AO": 39.5, "thermal": 36.25}
    assert n.rails_mw == {"POM_5V_IN": (1022.0, 1022.0), "POM_5V_GPU": (0.0, 0.0), "POM_5V_CPU": (204.0, 204.0)}
    assert n.total_power_mw == 1022.0

    t1 = parse_tegrastats(TX1)
    assert (t1.ram_used_mb, t1.ram_total_mb) == (1179, 3983)
    assert t1.rails_mw["VDD_IN"] == (2532.0, 2698.0)
    assert t1.total_power_mw == 2532.0
    assert t1.temps_c["Tdiode"] == 42.75

    t2 = parse_tegrastats(TX2)
    assert t2.cpu_load == (1.0, None, None, 1.0, 0.0, 2.0)
    assert (t2.gpu_load_pct, t2.gpu_freq_mhz) == (0.0, 624)
    assert t2.total_power_mw == 3056.0
    assert t2.rails_mw["VDD_SYS_DDR"] == (883.0, 883.0)

    b = parse_tegrastats(TX2_BESZEL)
    assert b.cpu_load == (44.0, 49.0, 67.0, 17.0, 25.0, 8.0)
    assert b.cpu_freq_mhz == 2034
    assert b.temps_c["GPU"] == 39.5
    assert b.rails_mw["VDD_SYS_GPU"] == (182.0, 182.0)
    assert b.total_power_mw == 5297.0


@pytest.mark.parametrize("line", ALL_LINES)
def test_timestamp_prefix_gives_the_same_sample(line: str) -> None:
    bare = line.split("RAM", 1)[1]
    plain = parse_tegrastats("RAM" + bare)
    assert parse_tegrastats("12-23-2024 22:54:11 RAM" + bare) == plain
    assert parse_tegrastats(line + "\n") == plain


@pytest.mark.parametrize("garbage", ["", "hello world", "RAM lots", "CPU [1%@102] GR3D_FREQ 0%",
                                     "RAM 100/200MB CPU [fast,slow]"])
def test_garbage_raises_input_error_naming_the_line(garbage: str) -> None:
    with pytest.raises(InputError) as info:
        parse_tegrastats(garbage)
    assert repr(garbage.strip()[:20])[1:-1] in str(info.value)
    assert "\n" not in str(info.value)


def test_non_string_raises_input_error() -> None:
    with pytest.raises(InputError, match="bytes"):
        parse_tegrastats(b"RAM 1/2MB")  # type: ignore[arg-type]


# --- TegrastatsReader with a real child process ---------------------------------------------------

def _fake_tegrastats(tmp_path: Path, lines: list[str]) -> Path:
    script = tmp_path / "fake_tegrastats.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        for line in {lines!r}:
            print(line, flush=True)
            time.sleep(0.05)
        while True:
            time.sleep(0.05)
    """))
    return script


def _wait_for(reader: TegrastatsReader, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(reader.samples) + reader.summary()["skipped_lines"] >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"only {len(reader.samples)} samples after {timeout_s} s")


def test_reader_summarises_a_real_subprocess(tmp_path: Path) -> None:
    script = _fake_tegrastats(tmp_path, [NANO, TX1, "not a tegrastats line", XAVIER_NX])
    reader = TegrastatsReader(interval_ms=50, command=[sys.executable, str(script)])
    assert reader.available and reader.reason is None
    with reader:
        _wait_for(reader, 4)
        proc = reader._proc
        started = time.monotonic()
        reader.stop()
        assert time.monotonic() - started < 1.0
    assert proc is not None and proc.poll() is not None  # the child is gone
    summary = reader.summary()
    assert summary["samples"] == 3 and summary["skipped_lines"] == 1
    assert summary["power_mean_w"] == pytest.approx((1.022 + 2.532 + 4.067) / 3)
    assert summary["power_max_w"] == pytest.approx(4.067)
    assert summary["gpu_load_mean_pct"] == pytest.approx(62 / 3)
    assert summary["temp_max_c"]["CPU"] == 43.5 and summary["temp_max_c"]["PMIC"] == 100.0
    assert summary["temp_max_c"]["PLL"] == 37.0


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(textwrap.dedent(f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print({NANO!r}, flush=True)
        while True:
            time.sleep(0.05)
    """))
    reader = TegrastatsReader(command=[sys.executable, str(script)])
    reader.start()
    _wait_for(reader, 1)
    started = time.monotonic()
    reader.stop()
    assert time.monotonic() - started < 1.0
    assert reader.summary()["samples"] == 1


def test_reader_unavailable_without_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reader = TegrastatsReader(interval_ms=200)
    assert not reader.available and "tegrastats" in (reader.reason or "")
    assert reader.command[1:] == ["--interval", "200"]
    with reader:
        pass
    summary = reader.summary()
    assert summary["available"] is False and summary["samples"] == 0 and summary["power_mean_w"] is None

    missing = TegrastatsReader(command=[str(tmp_path / "nope")])
    assert not missing.available and "nope" in (missing.reason or "")


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_reader_rejects_bad_interval(bad: object) -> None:
    with pytest.raises(InputError, match="interval_ms"):
        TegrastatsReader(interval_ms=bad)  # type: ignore[arg-type]


# --- RaplReader on a fake sysfs tree --------------------------------------------------------------

def _zone(root: Path, name: str, energy: int, max_range: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_range}\n")
    (zone / "name").write_text("package-0\n")
    return zone


def test_rapl_reads_packages_and_undoes_a_wrap(tmp_path: Path) -> None:
    span = 262143328850
    z0 = _zone(tmp_path, "intel-rapl:0", span - 1_000_000, span)
    z1 = _zone(tmp_path, "intel-rapl:1", 5_000_000, span)
    _zone(tmp_path, "intel-rapl:0:0", 42, span)  # sub-zone (core), contained in package 0: ignored
    reader = RaplReader(root=tmp_path)
    assert reader.available, reader.reason
    assert sorted(reader.zones) == ["intel-rapl:0", "intel-rapl:1"]
    start = reader.read()
    assert start.energy_uj == {"intel-rapl:0": span - 1_000_000, "intel-rapl:1": 5_000_000}
    (z0 / "energy_uj").write_text("2000000\n")       # wrapped: 1 J to the top, then 2 J
    (z1 / "energy_uj").write_text("9000000\n")       # 4 J
    end = reader.read()
    assert reader.joules_between(start, end) == {"intel-rapl:0": pytest.approx(3.0), "intel-rapl:1": pytest.approx(4.0)}
    start, end = replace(start, time_s=10.0), replace(end, time_s=12.0)
    assert reader.watts_between(start, end) == pytest.approx(3.5)
    with pytest.raises(InputError, match="time order"):
        reader.watts_between(end, start)


def test_rapl_missing_tree(tmp_path: Path) -> None:
    reader = RaplReader(root=tmp_path / "powercap")
    assert not reader.available
    assert "does not exist" in (reader.reason or "")
    with pytest.raises(SensorError, match="does not exist"):
        reader.read()


def test_rapl_tree_without_zones_or_with_unreadable_counter(tmp_path: Path) -> None:
    empty = RaplReader(root=tmp_path)
    assert not empty.available and "no intel-rapl" in (empty.reason or "")
    zone = tmp_path / "intel-rapl:0"
    (zone / "energy_uj").mkdir(parents=True)  # a directory where the counter should be
    (zone / "max_energy_range_uj").write_text("100\n")
    broken = RaplReader(root=tmp_path)
    assert not broken.available and "cannot read" in (broken.reason or "")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of their mode")
def test_rapl_permission_denied(tmp_path: Path) -> None:
    zone = _zone(tmp_path, "intel-rapl:0", 1, 100)
    (zone / "energy_uj").chmod(0)
    reader = RaplReader(root=tmp_path)
    assert not reader.available and "permission denied" in (reader.reason or "")
