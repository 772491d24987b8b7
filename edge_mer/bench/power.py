"""Power and thermal readers for benchmarks: Jetson ``tegrastats`` and Intel RAPL.

``parse_tegrastats`` understands the three line families NVIDIA has shipped:

* Orin (JetPack 5/6): rails in ``mW`` with ``current/average`` (``VDD_IN 4532mW/4532mW``),
  lower-case sensors (``cpu@47.5C``), ``GR3D_FREQ 0%@[305]`` with a bracketed per-GPC list,
  and a leading ``MM-DD-YYYY HH:MM:SS`` timestamp.
* Xavier (JetPack 4): bare rails named ``GPU CPU SOC CV VDDRQ SYS5V`` with ``current/average``
  in mW and no input rail (``GPU 463/463``), ``GR3D_FREQ 0%@1377``.
* Nano / TX1 / TX2 (JetPack 4): ``POM_5V_IN 1234/1234`` (Nano) or ``VDD_IN 2532/2698`` (TX1, TX2),
  optional ``IRAM ...`` and ``off`` for offline cores.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

from edge_mer.errors import InputError, SensorError

log = logging.getLogger(__name__)

#: Rails that measure the whole module input, in order of preference.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
#: Rail names that are unconnected monitor channels (AGX Orin prints ``NC 0mW/0mW``).
UNCONNECTED_RAILS = frozenset({"NC"})
#: Temperatures at or below this are "sensor absent" placeholders (AGX Orin prints ``CV0@-256C``).
ABSENT_TEMP_C = -200.0

_TIMESTAMP = re.compile(r"^\s*\d{2}-\d{2}-\d{4}\s+\d{2}:\d{2}:\d{2}\s+")
_RAM = re.compile(r"\bRAM\s+(\d+)/(\d+)MB\b")
_CPU = re.compile(r"\bCPU\s+\[([^\]]*)\]")
_CORE = re.compile(r"^(\d+(?:\.\d+)?)%(?:@(\d+))?$")
_GPU = re.compile(r"\bGR3D_FREQ\s+(\d+(?:\.\d+)?)%(?:@\[?([\d,]*)\]?)?")
_TEMP = re.compile(r"(?<![\w@%])([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"(?<![\w/])([A-Za-z][\w]*)\s+(\d+(?:\.\d+)?)(?:mW)?/(\d+(?:\.\d+)?)(?:mW)?(?:/\d+(?:\.\d+)?(?:mW)?)?(?![\w/])")


@dataclass(frozen=True)
class TegraSample:
    """One parsed ``tegrastats`` line.

    ``cpu_load`` holds one entry per core, ``None`` for a core printed as ``off``.
    ``cpu_freq_mhz`` is the highest frequency among online cores (cores in one cluster share it).
    ``gpu_freq_mhz`` is the highest value of a bracketed per-GPC list (``@[305]``, ``@[0,0]``);
    it and ``gpu_load_pct`` are ``None`` where the line does not report them (non-root runs).
    ``rails_mw`` maps a rail name to ``(current, average)`` in mW; ``temps_c`` omits absent sensors.
    """

    ram_used_mb: int
    ram_total_mb: int
    cpu_load: tuple[float | None, ...]
    cpu_freq_mhz: int | None
    gpu_load_pct: float | None
    gpu_freq_mhz: int | None
    temps_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def total_power_mw(self) -> float | None:
        """Instantaneous input power in mW, or ``None`` when the line has no rails.

        * ``VDD_IN`` when present (Orin Nano/NX, Xavier NX, TX1, TX2): the module input rail.
        * else ``POM_5V_IN`` (Nano): the module 5 V input rail.
        * else the sum of the current values of every rail except unconnected ``NC`` channels.
          On AGX Xavier that is ``GPU + CPU + SOC + CV + VDDRQ + SYS5V``; on AGX Orin it is
          ``VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 + VDDQ_VDD2_1V8AO``. Neither board has an
          input rail, so this sum is the closest figure to module power tegrastats offers.
        """
        for name in INPUT_RAILS:
            if name in self.rails_mw:
                return self.rails_mw[name][0]
        usable = [cur for name, (cur, _avg) in self.rails_mw.items() if name not in UNCONNECTED_RAILS]
        return float(sum(usable)) if usable else None


def _short(line: str) -> str:
    text = line.strip()
    return text if len(text) <= 120 else text[:117] + "..."


def _parse_cpu(body: str, line: str) -> tuple[tuple[float | None, ...], int | None]:
    loads: list[float | None] = []
    freqs: list[int] = []
    for item in (part.strip() for part in body.split(",")):
        if item == "off":
            loads.append(None)
            continue
        match = _CORE.match(item)
        if match is None:
            raise InputError(f"unparsable CPU entry {item!r} in tegrastats line {_short(line)!r}")
        loads.append(float(match.group(1)))
        if match.group(2):
            freqs.append(int(match.group(2)))
    return tuple(loads), (max(freqs) if freqs else None)


def parse_tegrastats(line: str) -> TegraSample:
    """Parse one line of ``tegrastats`` output (any of the three families, optional timestamp).

    Raises :class:`InputError` naming the line when it has no ``RAM used/totalMB`` field or a
    malformed ``CPU [...]`` list.
    """
    if not isinstance(line, str):
        raise InputError(f"tegrastats line must be a string, got {type(line).__name__}")
    text = _TIMESTAMP.sub("", line, count=1).strip()
    ram = _RAM.search(text)
    if ram is None:
        raise InputError(f"not a tegrastats line (no 'RAM used/totalMB'): {_short(line)!r}")
    cpu_load: tuple[float | None, ...] = ()
    cpu_freq: int | None = None
    cpu = _CPU.search(text)
    if cpu is not None:
        cpu_load, cpu_freq = _parse_cpu(cpu.group(1), line)
    gpu_load: float | None = None
    gpu_freq: int | None = None
    gpu = _GPU.search(text)
    if gpu is not None:
        gpu_load = float(gpu.group(1))
        values = [int(v) for v in (gpu.group(2) or "").split(",") if v]
        gpu_freq = max(values) if values else None
    temps = {name: float(value) for name, value in _TEMP.findall(text) if float(value) > ABSENT_TEMP_C}
    rails = {name: (float(cur), float(avg)) for name, cur, avg in _RAIL.findall(text)
             if name not in {"RAM", "SWAP", "IRAM"}}
    return TegraSample(
        ram_used_mb=int(ram.group(1)), ram_total_mb=int(ram.group(2)), cpu_load=cpu_load,
        cpu_freq_mhz=cpu_freq, gpu_load_pct=gpu_load, gpu_freq_mhz=gpu_freq,
        temps_c=temps, rails_mw=rails,
    )


class TegrastatsReader:
    """Run ``tegrastats --interval N`` in a subprocess and collect parsed samples in a thread.

    Use as a context manager. Where the binary is missing (any non-Jetson host), ``available``
    is False, ``reason`` says why, and start/stop/summary do nothing harmful. ``command``
    replaces the whole command line (tests pass a script that prints recorded lines).
    """

    def __init__(self, interval_ms: int = 1000, command: Sequence[str] | None = None) -> None:
        if not isinstance(interval_ms, int) or isinstance(interval_ms, bool) or interval_ms <= 0:
            raise InputError(f"tegrastats interval_ms must be a positive integer, got {interval_ms!r}")
        self.interval_ms = interval_ms
        self.reason: str | None = None
        if command is None:
            binary = shutil.which("tegrastats")
            self.command: list[str] = [binary or "tegrastats", "--interval", str(interval_ms)]
            if binary is None:
                self.reason = "tegrastats not found on PATH (not a Jetson, or JetPack tools missing)"
        else:
            self.command = [str(part) for part in command]
            if not self.command or shutil.which(self.command[0]) is None:
                self.reason = f"command {self.command[:1]!r} is not an executable"
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._samples: list[TegraSample] = []
        self._skipped = 0

    @property
    def available(self) -> bool:
        """Whether tegrastats (or the override command) can be run."""
        return self.reason is None

    @property
    def samples(self) -> list[TegraSample]:
        """A copy of the samples parsed so far."""
        with self._lock:
            return list(self._samples)

    def start(self) -> None:
        """Start the subprocess and the reader thread (a no-op when unavailable or running)."""
        if not self.available:
            log.warning("power readings off: %s", self.reason)
            return
        if self._proc is not None:
            return
        try:
            self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, bufsize=1)
        except OSError as exc:
            self.reason = f"cannot run {self.command[0]!r}: {exc}"
            log.warning("power readings off: %s", self.reason)
            return
        stdout = self._proc.stdout
        if stdout is None:
            raise SensorError(f"tegrastats command {self.command[0]!r} gave no stdout pipe")
        self._thread = threading.Thread(target=self._pump, args=(stdout,),
                                        name="tegrastats-reader", daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            if not line.strip():
                continue
            try:
                sample = parse_tegrastats(line)
            except InputError as exc:
                log.debug("skipping tegrastats line: %s", exc)
                with self._lock:
                    self._skipped += 1
                continue
            with self._lock:
                self._samples.append(sample)

    def stop(self, timeout_s: float = 1.0) -> None:
        """Terminate the subprocess (kill if it lingers) and join the reader, within ``timeout_s``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        deadline = time.monotonic() + timeout_s
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=max(0.05, (deadline - time.monotonic()) * 0.6))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
            self._thread = None
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> TegrastatsReader:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def summary(self) -> dict:
        """Mean/max total power (W), max temperature per sensor (C) and mean GPU load (%) so far."""
        samples = self.samples
        with self._lock:
            skipped = self._skipped
        out: dict = {"available": self.available, "reason": self.reason, "samples": len(samples),
                     "skipped_lines": skipped, "power_mean_w": None, "power_max_w": None,
                     "gpu_load_mean_pct": None, "temp_max_c": {}}
        powers = [s.total_power_mw / 1000.0 for s in samples if s.total_power_mw is not None]
        if powers:
            out["power_mean_w"] = sum(powers) / len(powers)
            out["power_max_w"] = max(powers)
        loads = [s.gpu_load_pct for s in samples if s.gpu_load_pct is not None]
        if loads:
            out["gpu_load_mean_pct"] = sum(loads) / len(loads)
        temps: dict[str, float] = {}
        for sample in samples:
            for name, value in sample.temps_c.items():
                temps[name] = max(value, temps.get(name, value))
        out["temp_max_c"] = temps
        return out


@dataclass(frozen=True)
class RaplReading:
    """Energy counters (uJ) of every RAPL package zone at one ``time.monotonic()`` instant."""

    time_s: float
    energy_uj: dict[str, int]


class RaplReader:
    """Intel RAPL package energy from ``<root>/intel-rapl:N/energy_uj`` (plain sysfs reads).

    Only top-level package zones (``intel-rapl:N``, not sub-zones ``intel-rapl:N:M``, which are
    contained in them) are read, so the total is not double counted. ``available`` is False with
    ``reason`` when the tree is absent, has no zones, or the counters are unreadable (they are
    root-only on kernels patched for CVE-2020-8694).
    """

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.root = Path(root)
        self.reason: str | None = None
        self.zones: dict[str, Path] = {}
        self.max_range_uj: dict[str, int] = {}
        self._probe()

    @property
    def available(self) -> bool:
        """Whether every package zone's counter could be read."""
        return self.reason is None

    def _probe(self) -> None:
        if not self.root.is_dir():
            self.reason = f"RAPL powercap tree {self.root} does not exist (not an Intel host?)"
            return
        zones = sorted(p for p in self.root.iterdir() if re.fullmatch(r"intel-rapl:\d+", p.name))
        if not zones:
            self.reason = f"no intel-rapl:N zones under {self.root}"
            return
        for zone in zones:
            try:
                int((zone / "energy_uj").read_text().strip())
                self.max_range_uj[zone.name] = int((zone / "max_energy_range_uj").read_text().strip())
            except PermissionError:
                self.reason = f"permission denied reading {zone / 'energy_uj'} (RAPL counters are root-only)"
                return
            except (OSError, ValueError) as exc:
                self.reason = f"cannot read RAPL counters in {zone}: {exc}"
                return
            self.zones[zone.name] = zone / "energy_uj"

    def read(self) -> RaplReading:
        """Read every package counter now; raises :class:`SensorError` when unavailable."""
        if not self.available:
            raise SensorError(f"RAPL not available: {self.reason}")
        try:
            values = {name: int(path.read_text().strip()) for name, path in self.zones.items()}
        except (OSError, ValueError) as exc:
            raise SensorError(f"cannot read RAPL counter: {exc}") from exc
        return RaplReading(time_s=time.monotonic(), energy_uj=values)

    def joules_between(self, start: RaplReading, end: RaplReading) -> dict[str, float]:
        """Energy per zone between two readings, undoing one counter wrap per zone."""
        if set(start.energy_uj) != set(end.energy_uj):
            raise InputError(f"RAPL readings cover different zones: {sorted(start.energy_uj)} vs {sorted(end.energy_uj)}")
        out = {}
        for name, before in start.energy_uj.items():
            delta = end.energy_uj[name] - before
            if delta < 0:
                span = self.max_range_uj.get(name)
                if not span:
                    raise InputError(f"RAPL counter {name} went backwards and its wrap range is unknown")
                delta += span
            out[name] = delta / 1e6
        return out

    def watts_between(self, start: RaplReading, end: RaplReading) -> float:
        """Mean total package power in W between two readings."""
        elapsed = end.time_s - start.time_s
        if elapsed <= 0:
            raise InputError(f"RAPL readings must be in time order, got elapsed {elapsed!r} s")
        return sum(self.joules_between(start, end).values()) / elapsed


class PowerMonitor:
    """Power over a ``with`` block: tegrastats on a Jetson, else RAPL package energy, else the reason for none."""

    def __init__(self, tegrastats: TegrastatsReader | None = None, rapl: RaplReader | None = None) -> None:
        self.tegrastats = tegrastats or TegrastatsReader()
        self.rapl = rapl if rapl is not None or self.tegrastats.available else RaplReader()
        self._start: RaplReading | None = None
        self._result: dict | None = None

    def __enter__(self) -> PowerMonitor:
        if self.tegrastats.available:
            self.tegrastats.start()
        elif self.rapl is not None and self.rapl.available:
            self._start = self.rapl.read()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.tegrastats.available:
            self.tegrastats.stop()
            self._result = {"source": "tegrastats", **self.tegrastats.summary()}
        elif self._start is not None and self.rapl is not None:
            try:
                watts = self.rapl.watts_between(self._start, self.rapl.read())
            except (SensorError, InputError) as exc:  # a counter that vanished or wrapped twice: no figure
                self._result = {"source": None, "reason": f"RAPL reading failed: {exc}"}
                return
            self._result = {"source": "rapl", "package_power_mean_w": round(watts, 2)}

    def summary(self) -> dict:
        """What was measured, or ``{"source": None, "reason": ...}``."""
        if self._result is not None:
            return self._result
        reasons = [self.tegrastats.reason] + ([self.rapl.reason] if self.rapl is not None else [])
        return {"source": None, "reason": "; ".join(r for r in reasons if r)}
