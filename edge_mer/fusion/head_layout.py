"""The input and output convention of a learned fusion head, checked against the bundle it ships in.

Inputs (every one ``[1, K]`` or ``[batch_axis, K]``, float32 or float16):

* ``<encoder>`` (``kind: "probs"``, ``labels``: canonical labels of that
  encoder, its ``label_map`` targets, in the order the head expects): the
  result's calibrated probabilities at those labels, zeros when the encoder
  has no valid result this tick.
* ``<encoder>.<output>`` (``kind: "embedding"``): that encoder's embedding
  output ``<output>`` (an encoder output of kind ``embedding`` with the same
  width K), averaged over the window like its probabilities; zeros when absent.
  This is how the manifest says which head consumes which encoder outputs.
* ``mask`` (reserved: no encoder may be called that), ``[1, M]``, whose
  ``labels`` name each encoder the head reads, once: 1.0 where the encoder's
  result is valid and weighted above 0 this tick, 0.0 otherwise.

Outputs:

* exactly one of ``kind`` ``probs`` (or ``logits``, softmaxed by the
  runtime), ``[1, L]``: the fused distribution; its labels must all have
  valence/arousal coordinates in the bundle;
* optionally one of ``kind`` ``multilabel``, ``[1, L']``: independent scores
  in [0, 1] (sigmoids) with a threshold per label, never renormalised; the
  labels at or above their thresholds are the decision's ``labels_active``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import FusionHead, TensorInfo
from edge_mer.errors import BundleError

MASK_INPUT = "mask"
_FLOAT_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class EmbeddingInput:
    """A head input fed an encoder's embedding output: the input, the encoder and the output it reads."""

    tensor: TensorInfo
    encoder: str
    output: str


@dataclass(frozen=True)
class HeadLayout:
    """A head's tensors, checked against the convention of this module."""

    encoders: tuple[TensorInfo, ...]
    mask: TensorInfo
    output: TensorInfo
    embeddings: tuple[EmbeddingInput, ...] = ()
    multilabel: TensorInfo | None = None

    @property
    def read_encoders(self) -> tuple[str, ...]:
        """Every encoder the head reads (the mask's labels), in mask order."""
        return self.mask.labels


def _check_matrix(tensor: TensorInfo, width: int, what: str) -> None:
    shape = tensor.shape
    if len(shape) != 2 or not (shape[0] == 1 or isinstance(shape[0], str)) or shape[1] != width:
        raise BundleError(f"fusion head {what} {tensor.name!r} has shape {list(shape)}, expected [1, {width}]")
    if what == "input" and tensor.dtype not in _FLOAT_DTYPES:
        raise BundleError(f"fusion head input {tensor.name!r} is {tensor.dtype}, expected float32 or float16")


def _check_probs_input(bundle: Bundle, tensor: TensorInfo) -> None:
    encoders = bundle.manifest.encoders
    if tensor.kind != "probs" or not tensor.labels:
        raise BundleError(f"fusion head input {tensor.name!r} needs kind 'probs' and the labels it expects")
    have = set(encoders[tensor.name].label_map.values())
    unknown = [label for label in tensor.labels if label not in have]
    if unknown or len(set(tensor.labels)) != len(tensor.labels):
        raise BundleError(f"fusion head input {tensor.name!r}: labels {list(tensor.labels)} must be distinct "
                          f"labels of encoder {tensor.name} ({', '.join(sorted(have))})")
    _check_matrix(tensor, len(tensor.labels), "input")


def split_embedding_name(name: str, encoders: Iterable[str]) -> tuple[str, str] | None:
    """``(encoder, output)`` of an ``<encoder>.<output>`` input name, by the longest encoder name that fits
    (encoder names may hold dots themselves); None when no encoder does."""
    fits = [e for e in encoders if name.startswith(e + ".") and len(name) > len(e) + 1]
    if not fits:
        return None
    encoder = max(fits, key=len)
    return encoder, name[len(encoder) + 1:]


def _embedding_input(bundle: Bundle, tensor: TensorInfo) -> EmbeddingInput:
    split = split_embedding_name(tensor.name, bundle.manifest.encoders)
    encoder, output = split if split is not None else ("", "")
    spec = bundle.manifest.encoders.get(encoder)
    if spec is None:
        raise BundleError(f"fusion head input {tensor.name!r} names no encoder "
                          f"(encoders: {', '.join(bundle.manifest.encoders)}; the validity mask input is "
                          f"{MASK_INPUT!r})")
    source = next((o for o in spec.outputs if o.name == output and o.kind == "embedding"), None)
    if source is None or tensor.kind != "embedding":
        offered = [o.name for o in spec.outputs if o.kind == "embedding"]
        raise BundleError(f"fusion head input {tensor.name!r} needs kind 'embedding' and an embedding output "
                          f"{output!r} of encoder {encoder} (its embedding outputs: {', '.join(offered) or 'none'})")
    _check_matrix(tensor, int(source.shape[-1]), "input")
    return EmbeddingInput(tensor, encoder, output)


def _split_inputs(bundle: Bundle, head: FusionHead) -> tuple[tuple[TensorInfo, ...], tuple[EmbeddingInput, ...]]:
    probs, embeddings = [], []
    for tensor in head.inputs:
        if tensor.name == MASK_INPUT:
            continue
        if tensor.name in bundle.manifest.encoders:
            _check_probs_input(bundle, tensor)
            probs.append(tensor)
        elif split_embedding_name(tensor.name, bundle.manifest.encoders) is not None:
            embeddings.append(_embedding_input(bundle, tensor))
        else:
            raise BundleError(f"fusion head input {tensor.name!r} names no encoder "
                              f"(encoders: {', '.join(bundle.manifest.encoders)}; the validity mask input is "
                              f"{MASK_INPUT!r})")
    if not probs and not embeddings:
        raise BundleError("fusion head needs at least one encoder input besides the mask")
    return tuple(probs), tuple(embeddings)


def _outputs(bundle: Bundle, head: FusionHead) -> tuple[TensorInfo, TensorInfo | None]:
    outputs = [t for t in head.outputs if t.kind in ("probs", "logits")]
    if len(outputs) != 1:
        raise BundleError(f"fusion head needs exactly one output of kind probs or logits, has {len(outputs)}")
    output = outputs[0]
    _check_matrix(output, len(output.labels), "output")
    coords = bundle.manifest.affect.valence_arousal
    missing = [label for label in output.labels if label not in coords]
    if missing:
        raise BundleError(f"fusion head output label {missing[0]!r} has no affect.valence_arousal coordinates")
    multilabel = [t for t in head.outputs if t.kind == "multilabel"]
    if len(multilabel) > 1:
        raise BundleError(f"fusion head may have one output of kind multilabel, has {len(multilabel)}")
    if multilabel:
        _check_matrix(multilabel[0], len(multilabel[0].labels), "output")
    return output, (multilabel[0] if multilabel else None)


def head_layout(bundle: Bundle, head: FusionHead) -> HeadLayout:
    """Check ``head``'s declared tensors against the convention of this module (BundleError otherwise)."""
    if MASK_INPUT in bundle.manifest.encoders:
        raise BundleError(f"encoder name {MASK_INPUT!r} collides with the fusion head's mask input")
    mask = next((t for t in head.inputs if t.name == MASK_INPUT), None)
    if mask is None:
        raise BundleError(f"fusion head needs an input named {MASK_INPUT!r} (the validity mask)")
    probs, embeddings = _split_inputs(bundle, head)
    read = {t.name for t in probs} | {e.encoder for e in embeddings}
    if len(mask.labels) != len(set(mask.labels)) or set(mask.labels) != read:
        raise BundleError(f"fusion head mask labels {list(mask.labels)} must name each encoder the head reads "
                          f"once ({', '.join(sorted(read))})")
    _check_matrix(mask, len(mask.labels), "input")
    output, multilabel = _outputs(bundle, head)
    return HeadLayout(probs, mask, output, embeddings, multilabel)
