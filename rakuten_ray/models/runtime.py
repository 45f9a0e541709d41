"""Where a deep model's forward passes run: PyTorch, or ONNX Runtime on a CPU.

PyTorch's eager kernels leave much of a CPU's speed unused on these small batches; ONNX
Runtime fuses the graph (batch norm into convolutions, attention into one kernel): the demo's
image model stage runs 2.85 times as fast on one thread (docs/performance.md, "CPU
runtime"). So when a bundle is sealed, each deep model is also exported to ONNX
(:func:`check_exports`, called by the model's kind): ``model.onnx`` in fp32 and, where its
kind names operators to quantise, a static int8 copy, kept in its place where it passes the
same checks and runs faster. ``runtime.json`` names the file
scoring loads and what the check measured; all of them are bundle files, hashed by the
manifest like every other. The check also compares the held-out logits that fusion was fitted
on, computed at whatever precision held-out scoring ran (bf16 on a GPU cluster), with what CPU
scoring computes on the same rows, and records both precisions.

A scorer's forward passes are one :data:`Forward`: a mapping of named CPU tensors in, float32
logits out. :func:`select_forward` chooses once per scorer: ONNX Runtime where the model runs
on a CPU, the pool's ``runtime`` is ``auto`` and the folder holds an export; PyTorch otherwise
(GPUs, folders not yet sealed, ``runtime: torch``). Both run fixed-shape calls with a fixed
number of threads, so a row's output never depends on the rows scored with it on either.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import torch

#: The file that says which export scoring loads, and how it was checked.
RECORD_FILE = "runtime.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
#: ``auto``: ONNX Runtime on a CPU where the bundle holds an export, PyTorch otherwise;
#: ``torch``: PyTorch everywhere.
RuntimeName = Literal["auto", "torch"]
#: Named input tensors (on the CPU) in, float32 logits of shape ``(rows, classes)`` out.
Forward = Callable[[Mapping[str, "torch.Tensor"]], np.ndarray]


class TorchForward:
    """Forward passes of a torch module on its device, autocast to ``autocast`` on a GPU."""

    def __init__(
        self,
        module: torch.nn.Module,
        device: torch.device,
        autocast: torch.dtype | None,
        channels_last: bool = False,
    ) -> None:
        import torch

        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.to(device, memory_format=self.memory_format).eval()
        self.device = device
        self.autocast = autocast

    @property
    def precision(self) -> str:
        """What its forward passes compute in: ``fp32``, ``bf16`` or ``fp16``."""
        from rakuten_ray.models.precision import precision_of

        return precision_of(self.autocast)

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        import torch

        from rakuten_ray.models.precision import autocast_to

        # Images go channels-last (``channels_last``): oneDNN and cuDNN pick faster kernels.
        moved = {
            name: value.to(self.device, non_blocking=True).contiguous(
                memory_format=self.memory_format if value.dim() == 4 else torch.contiguous_format
            )
            for name, value in inputs.items()
        }
        with torch.inference_mode(), autocast_to(self.device, self.autocast):
            logits = self.module(**moved)
        return logits.float().cpu().numpy()


class OnnxForward:
    """Forward passes of an exported model in ONNX Runtime on ``num_threads`` CPU threads.

    One intra-op thread count and sequential execution: the same call shape always runs the
    same kernels in the same order, so its results are reproducible bit for bit.
    """

    def __init__(self, path: Path, num_threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: every actor would repeat its warnings
        # Idle threads sleep rather than spin: stages side by side (a replica's text and
        # image, the engines' pools) share a few cores, and a spinning pool took them from
        # the one with work.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.names = [item.name for item in self.session.get_inputs()]
        #: What its forward passes compute in: the int8 copy's weights, else fp32.
        self.precision = "int8" if path.name == INT8_FILE else "fp32"

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(inputs[name].numpy()) for name in self.names}
        return self.session.run(None, feeds)[0].astype(np.float32, copy=False)


@dataclass(frozen=True)
class RuntimeRecord:
    """What ``runtime.json`` holds: the export scoring loads and the seal-time check."""

    #: The ONNX file scoring loads, in the model's folder (``None``: the fp32 export
    #: disagreed with PyTorch and was not kept; scoring runs PyTorch).
    file: str | None
    #: ``fp32``, or ``int8`` (the static int8 copy); ``None`` with no file.
    precision: Literal["fp32", "int8"] | None
    #: Held-out rows scored by PyTorch and by the exports.
    checked_rows: int
    #: Share of those rows whose label the fp32 export gives as PyTorch does.
    fp32_agreement: float
    #: Largest difference of a class probability between the fp32 export and PyTorch.
    fp32_max_prob_diff: float
    #: Whether the fp32 export scored every checked row the same, bit for bit, in reverse
    #: order (other rows in its calls): an export that does not is not kept.
    row_independent: bool = True
    #: Seconds the fp32 export's model calls took on the checked rows (the faster of two
    #: passes; ``None`` in records written before it was measured).
    fp32_seconds: float | None = None
    #: Rows whose model inputs fixed the int8 copy's activation scales (``None``: no copy
    #: was tried; so for every int8 field).
    calibration_rows: int | None = None
    #: Share of the checked rows whose label the int8 copy gives as PyTorch does.
    int8_agreement: float | None = None
    #: Largest difference of a class probability between the int8 copy and PyTorch.
    int8_max_prob_diff: float | None = None
    #: Whether the int8 copy scored every checked row alike in reverse order too.
    int8_row_independent: bool | None = None
    #: Seconds the int8 copy's model calls took on the checked rows, timed as fp32's.
    int8_seconds: float | None = None
    #: Whether it ran at least ``export.int8_min_speedup`` times as fast as the fp32 export:
    #: it is kept only where it is, and passes the other checks.
    int8_faster: bool | None = None
    #: What CPU scoring computes in: the kept export's precision, else fp32 (PyTorch).
    scoring_precision: str | None = None
    #: What the held-out logits that fusion was fitted on computed in, as held-out scoring
    #: ran: ``fp32`` on a CPU, ``bf16`` or ``fp16`` on a GPU (``None``: not compared, as when
    #: the model was retrained on every row after fusion).
    heldout_precision: str | None = None
    #: Whether those two are the same arithmetic.
    precision_matches: bool | None = None
    #: Share of the checked rows whose label the held-out logits give as CPU scoring does.
    heldout_agreement: float | None = None
    #: Largest difference of a class probability between the held-out logits and CPU scoring.
    heldout_max_prob_diff: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


@dataclass(frozen=True)
class HeldoutLogits:
    """The held-out logits that fusion was fitted on, by row index, and what they computed in
    (:func:`forward_precision`)."""

    logits: pd.DataFrame
    precision: str


def forward_precision(scorer: object) -> str | None:
    """What a scorer's forward passes compute in (``fp32``, ``bf16``, ``fp16``, ``int8``);
    ``None`` for a scorer without them (scikit-learn's)."""
    return getattr(getattr(scorer, "forward", None), "precision", None)


def read_record(folder: Path) -> RuntimeRecord | None:
    """The folder's ``runtime.json``, or ``None`` when it has no export."""
    path = folder / RECORD_FILE
    return RuntimeRecord(**json.loads(path.read_text())) if path.is_file() else None


def select_forward(
    folder: Path,
    runtime: RuntimeName,
    device: torch.device,
    num_threads: int,
    torch_forward: Callable[[], Forward],
) -> Forward:
    """The forward passes a scorer of ``folder`` runs: its ONNX export on a CPU under
    ``auto``, else ``torch_forward()`` (built only then, so an ONNX scorer never loads the
    torch weights)."""
    record = read_record(folder) if runtime == "auto" and device.type == "cpu" else None
    if record is None or record.file is None:
        return torch_forward()
    return OnnxForward(folder / record.file, num_threads)


def export_onnx(
    module: torch.nn.Module,
    example: Mapping[str, torch.Tensor],
    dynamic_axes: Mapping[str, Sequence[int]],
    path: Path,
) -> Path:
    """Export ``module`` (called as ``module(**inputs)``) to ONNX: the graph in ``path``, the
    weights beside it in ``<path>.data`` (a single file cannot hold more than 2 GB, and XLM-R
    large holds 2.2).

    Args:
        module: the network, in fp32 on the CPU.
        example: inputs of one call, by name; the ONNX inputs take these names.
        dynamic_axes: for each input, the axes whose size may vary (rows; token positions).
        path: the file written.
    """
    import torch

    names = list(example)

    class Positional(torch.nn.Module):
        """``module`` called by keyword, taking its inputs by position: what export traces."""

        def __init__(self) -> None:
            super().__init__()
            self.module = module.float().eval()

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.module(**dict(zip(names, inputs, strict=True)))

    dynamic = torch.export.Dim.DYNAMIC
    shapes = (tuple({axis: dynamic for axis in dynamic_axes.get(n, ())} for n in names),)
    # The exporter reports each step on stdout; a seal logs its own summary instead.
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            Positional().eval(), tuple(example.values()), str(path),
            input_names=names, output_names=["logits"], dynamic_shapes=shapes, dynamo=True,
            external_data=True, verbose=False,
        )  # fmt: skip
    return path


class _Feeds:
    """Recorded model inputs, one call at a time, as ONNX Runtime's calibration reads them
    (its ``CalibrationDataReader`` asks for ``get_next`` alone)."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> Mapping[str, np.ndarray] | None:
        return next(self.feeds, None)


def quantize_int8(
    source: Path, dest: Path, feeds: Sequence[Mapping[str, np.ndarray]], operators: Sequence[str]
) -> Path:
    """An int8 copy of an exported model, quantised statically in QDQ form: weights per output
    channel, and each quantised operator's activations on one scale fixed here from ``feeds``
    (the inputs of calibration calls, their ranges taken min to max). A scale fixed before
    scoring cannot depend on the rows that share a call, as dynamic quantisation's does.

    Args:
        source: the fp32 export.
        dest: the file written (its weights are in the file itself: int8 weights of the
            largest backbones fit in it).
        feeds: model inputs by name, one mapping per call.
        operators: ONNX operator types quantised (the kind's ``int8_operators``); the
            rest run in fp32.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reader = _Feeds(feeds)
    quantize_static(
        source, dest, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(operators),
        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )  # fmt: skip
    return dest


def remove_export(path: Path) -> None:
    """Delete an ONNX file and its weights file, if any."""
    for file in (path, path.with_name(path.name + ".data")):
        file.unlink(missing_ok=True)


def label_agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Share of rows whose highest-scoring class is the same in both logit matrices."""
    if not len(first):
        return 1.0
    return float(np.mean(first.argmax(axis=1) == second.argmax(axis=1)))


def max_prob_diff(first: np.ndarray, second: np.ndarray) -> float:
    """Largest difference of a softmax probability between two logit matrices."""
    from scipy.special import softmax

    if not len(first):
        return 0.0
    return float(np.abs(softmax(first, axis=1) - softmax(second, axis=1)).max())


class Exportable(Protocol):
    """A deep scorer loaded with PyTorch forward passes (``runtime: torch``)."""

    forward: Forward

    def export_onnx(self, path: Path) -> Path:
        """Write its network to ``path`` as ONNX."""

    def score_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Logits of catalogue rows (:meth:`rakuten_ray.models.scorers.Scorer.score_rows`)."""


def evenly_spread(rows: pd.DataFrame, count: int) -> pd.DataFrame:
    """At most ``count`` rows taken at even steps through ``rows``, in order."""
    if len(rows) <= count:
        return rows
    return rows.iloc[np.linspace(0, len(rows) - 1, count).round().astype(int)]


def heldout_comparison(
    heldout: HeldoutLogits, scored: pd.DataFrame, scoring_precision: str
) -> dict[str, Any]:
    """The :class:`RuntimeRecord` fields that compare the held-out logits with CPU scoring's
    logits ``scored`` of the same rows."""
    stored = heldout.logits.loc[scored.index].to_numpy()
    return {
        "heldout_precision": heldout.precision,
        "precision_matches": heldout.precision == scoring_precision,
        "heldout_agreement": label_agreement(stored, scored.to_numpy()),
        "heldout_max_prob_diff": max_prob_diff(stored, scored.to_numpy()),
    }


@dataclass(frozen=True)
class Int8Trial:
    """What an int8 copy of an export is made from, and how much faster it must run."""

    #: ONNX operator types quantised (the kind's ``int8_operators``); the rest stay fp32.
    operators: tuple[str, ...]
    #: Held-out rows whose model inputs fix the activation scales.
    calibration: pd.DataFrame
    #: The copy is kept only where the fp32 export's model calls on the checked rows take at
    #: least this many times as long as its own (``export.int8_min_speedup``).
    min_speedup: float


def recorded_feeds(scorer: Exportable, rows: pd.DataFrame) -> list[dict[str, np.ndarray]]:
    """The inputs of every model call that scoring ``rows`` makes, by name, as arrays."""
    forward = scorer.forward
    feeds: list[dict[str, np.ndarray]] = []

    def recording(inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        feeds.append({name: value.numpy().copy() for name, value in inputs.items()})
        return forward(inputs)

    scorer.forward = recording
    try:
        scorer.score_rows(rows)
    finally:
        scorer.forward = forward
    return feeds


def check_exports(
    scorer: Exportable,
    folder: Path,
    rows: pd.DataFrame,
    min_agreement: float,
    int8: Int8Trial | None = None,
    num_threads: int = 1,
    heldout: HeldoutLogits | None = None,
) -> RuntimeRecord:
    """Export a model in ``folder`` to ONNX and check it against PyTorch on ``rows``.

    The fp32 export is kept when its labels agree with PyTorch's on at least
    ``min_agreement`` of the rows and it scores each row the same bit for bit whatever rows
    share its calls (checked by scoring the rows again in reverse order): an export whose
    rows interact would break the engines' byte-identical output. With ``int8``, a static
    int8 copy (:func:`quantize_int8`) replaces it when it passes both checks too and its
    model calls are ``int8.min_speedup`` times as fast (each export timed on the faster of
    its two passes over ``rows``, in this process, one after the other). ``runtime.json``
    records what was measured and names the file scoring loads, or none (scoring stays on
    PyTorch). With ``heldout`` (this model's held-out logits, computed by the same weights),
    it also records how far what CPU scoring computes on ``rows`` lies from those logits,
    and whether both ran at the same precision.

    Returns:
        The record written.
    """
    import pandas as pd

    scorer.export_onnx(folder / ONNX_FILE)
    reference = scorer.score_rows(rows)
    expected = reference.to_numpy()

    def scored_with(file: str) -> tuple[np.ndarray, bool, float]:
        """An export's logits of ``rows``, whether reversing the rows left them as is, and
        the seconds its model calls took in the faster of the two passes."""
        forward = OnnxForward(folder / file, num_threads)
        spent = [0.0, 0.0]
        passes = []
        for index, order in enumerate((rows, rows.iloc[::-1])):

            def timed(inputs: Mapping[str, torch.Tensor], index: int = index) -> np.ndarray:
                start = time.perf_counter()
                logits = forward(inputs)
                spent[index] += time.perf_counter() - start
                return logits

            scorer.forward = timed
            passes.append(scorer.score_rows(order))
        scorer.forward = forward
        first, second = passes[0].to_numpy(), passes[1].loc[passes[0].index].to_numpy()
        return first, bool(np.array_equal(first, second)), min(spent)

    fp32, independent, fp32_seconds = scored_with(ONNX_FILE)
    logits = {ONNX_FILE: fp32}
    record = RuntimeRecord(
        ONNX_FILE, "fp32", len(expected), label_agreement(expected, fp32),
        max_prob_diff(expected, fp32), row_independent=independent, fp32_seconds=fp32_seconds,
    )  # fmt: skip
    if record.fp32_agreement < min_agreement or not independent:
        remove_export(folder / ONNX_FILE)
        record = replace(record, file=None, precision=None)
    elif int8 is not None:
        feeds = recorded_feeds(scorer, int8.calibration)  # scorer.forward: the fp32 export
        quantize_int8(folder / ONNX_FILE, folder / INT8_FILE, feeds, int8.operators)
        quantized, int8_independent, int8_seconds = scored_with(INT8_FILE)
        logits[INT8_FILE] = quantized
        record = replace(
            record, calibration_rows=len(int8.calibration),
            int8_agreement=label_agreement(expected, quantized),
            int8_max_prob_diff=max_prob_diff(expected, quantized),
            int8_row_independent=int8_independent, int8_seconds=int8_seconds,
            int8_faster=fp32_seconds >= int8.min_speedup * int8_seconds,
        )  # fmt: skip
        if record.int8_agreement >= min_agreement and int8_independent and record.int8_faster:
            remove_export(folder / ONNX_FILE)  # scoring loads the int8 copy only
            record = replace(record, file=INT8_FILE, precision="int8")
        else:
            remove_export(folder / INT8_FILE)
    record = replace(record, scoring_precision=record.precision or "fp32")
    if heldout is not None:
        # Without a kept export, CPU scoring runs PyTorch in fp32: the reference itself.
        kept = logits[record.file] if record.file is not None else expected
        scored = pd.DataFrame(kept, index=reference.index)
        record = replace(record, **heldout_comparison(heldout, scored, record.scoring_precision))
    (folder / RECORD_FILE).write_text(record.to_json())
    return record
