"""The typed decision: its JSON form, reading it back, and the coded reasons."""
from __future__ import annotations

import json
import math

import pytest

from edge_mer.errors import InputError
from edge_mer.names import MODALITIES, NO_EVIDENCE, PRECISIONS, QUANTIZED_PRECISIONS, ReasonCode
from edge_mer.preprocess.base import Invalid
from edge_mer.results import Decision, ModalityResult, dumps_json


def _decision() -> Decision:
    face = ModalityResult("face", "face", True, None, {"happy": 0.7, "sad": 0.3}, 4.25)
    speech = ModalityResult.invalid("speech", "speech", ReasonCode.SILENCE, latency_ms=1.5)
    eeg = ModalityResult.invalid("eeg", "eeg_cyton", ReasonCode.BAD_CHANNELS, "bad channels (2 > 1): Fp1 flat; O2 flat")
    return Decision(3.1234567, "happy", {"happy": 0.6666666666, "sad": 0.3333333333}, 0.41234567, -0.1, (face, speech,
                    eeg), 2.0004)


def test_to_json_is_the_decision_format() -> None:
    data = _decision().to_json()
    assert list(data) == ["t", "label", "probs", "valence", "arousal", "modalities", "latency_ms", "faces"]
    assert data["t"] == 3.123457 and data["probs"] == {"happy": 0.666667, "sad": 0.333333}
    assert data["latency_ms"] == 2.0
    assert data["modalities"]["face"] == {"valid": True, "reason": None, "reason_code": None, "label": "happy",
                                          "probs": {"happy": 0.7, "sad": 0.3}, "latency_ms": 4.25}
    assert data["modalities"]["speech"] == {"valid": False, "reason": "silence", "reason_code": "silence",
                                            "label": None, "probs": {}, "latency_ms": 1.5}
    assert data["modalities"]["eeg"]["reason_code"] == "bad_channels"
    assert data["modalities"]["eeg"]["reason"].startswith("bad channels (2 > 1)")


def test_json_text_is_one_strict_line_and_reads_back() -> None:
    decision = _decision()
    line = decision.json_text
    assert "\n" not in line and line.startswith('{"t":3.123457,"label":"happy",')
    assert json.loads(line) == decision.to_json()
    again = Decision.from_json(json.loads(line))
    assert again.to_json() == decision.to_json()
    assert again.result("speech").code is ReasonCode.SILENCE and again.valid("face") and not again.valid("eeg")
    assert again.result("voice") is None


def test_non_finite_values_become_null() -> None:
    assert json.loads(dumps_json({"v": math.nan, "p": {"x": math.inf}, "s": "é"})) == {"v": None, "p": {"x": None},
                                                                                        "s": "é"}


@pytest.mark.parametrize("data", [[], {"t": 1.0}, {"t": "x", "label": "a", "probs": {}, "valence": 0, "arousal": 0,
                                                    "modalities": {}, "latency_ms": 0},
                                  {"t": 1.0, "label": "a", "probs": {}, "valence": 0, "arousal": 0,
                                   "modalities": {"face": {"valid": False, "reason_code": "nope"}}, "latency_ms": 0}])
def test_malformed_decisions_are_one_line_input_errors(data: object) -> None:
    with pytest.raises(InputError) as info:
        Decision.from_json(data)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_reason_codes_carry_default_text() -> None:
    assert ModalityResult.invalid("face", "face", ReasonCode.NO_DATA).reason == "no data yet"
    assert Invalid(ReasonCode.NO_FACE) == Invalid(ReasonCode.NO_FACE, "no face")
    assert Invalid(ReasonCode.FILLING, "filling: 1 s of 2").reason == "filling: 1 s of 2"
    assert {c.value for c in ReasonCode} >= {"model_error", "sensor_failed", "stale", "silence", "no_face"}
    assert len({c.value for c in ReasonCode}) == len(ReasonCode)
    with pytest.raises(TypeError):
        Invalid("no face")  # type: ignore[arg-type]


def test_vocabularies() -> None:
    assert PRECISIONS == ("fp32", "fp16", "int8") and QUANTIZED_PRECISIONS == ("fp16", "int8")
    assert MODALITIES == ("face", "speech", "eeg")
    assert NO_EVIDENCE == "unknown"


def test_uncertainty_and_labels_active_are_checked_when_read_back() -> None:
    import pytest

    from edge_mer.errors import InputError
    from edge_mer.results import Decision, Uncertainty

    good = Uncertainty(0.5, 0.9, (0.2, 0.7), 0.9, 100, "happy")
    assert Uncertainty.from_json(good.to_json()) == good
    for bad in ({"agreement": 7}, {"interval": [0.8, 0.1]}, {"samples": -3}, {"samples": 2.7},
                {"entropy": float("nan")}, {"level": 1.0}):
        with pytest.raises(InputError, match="uncertainty"):
            Uncertainty.from_json({**good.to_json(), **bad})
    base = {"t": 1.0, "label": "happy", "probs": {"happy": 1.0}, "valence": 0.5, "arousal": 0.1, "modalities": {},
            "latency_ms": 1.0}
    assert Decision.from_json({**base, "labels_active": {"happy": 0.8}}).labels_active == {"happy": 0.8}
    with pytest.raises(InputError, match=r"labels_active score inf is not in \[0, 1\]"):
        Decision.from_json({**base, "labels_active": {"happy": float("inf")}})
    with pytest.raises(InputError) as err:
        Decision.from_json({**base, "uncertainty": {**good.to_json(), "agreement": 7}})
    assert str(err.value).count("decision format") <= 1  # one message, not one wrapped in another
