"""Where a deep model's forward passes run: PyTorch, or ONNX Runtime on a CPU.

PyTorch's eager kernels leave much of a CPU's speed unused on these small batches; ONNX
Runtime fuses the graph (batch norm into convolutions, attention into one kernel): the demo's
image model stage runs 2.85 times as fast on one thread (docs/performance.md, "CPU
runtime"). So when a bundle is sealed, each deep model is also exported to ONNX
(:func:`export_runtime`, called by the model's kind): ``model.onnx`` in fp32 and, where its
kind allows it and the held-out labels agree, an int8 copy. ``runtime.json`` names the file
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
    #: ``fp32``, or ``int8`` (dynamically quantised weights); ``None`` with no file.
    precision: Literal["fp32", "int8"] | None
    #: Held-out rows scored by PyTorch and by the exports.
    checked_rows: int
    #: Share of those rows whose label the fp32 export gives as PyTorch does.
    fp32_agreement: float
    #: Largest difference of a class probability between the fp32 export and PyTorch.
    fp32_max_prob_diff: float
    #: Share whose label the int8 copy gives as the fp32 model does (``None``: not tried).
    int8_agreement: float | None = None
    #: Whether the fp32 export scored every checked row the same, bit for bit, in reverse
    #: order (other rows in its calls): an export that does not is not kept.
    row_independent: bool = True
    #: The same for the int8 copy (``None``: not tried). Dynamic quantisation scales each
    #: call's activations by their range over the whole call, so its rows interact.
    int8_row_independent: bool | None = None
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


def quantize_int8(source: Path, dest: Path) -> Path:
    """An int8 copy of an exported model: weights of its matrix products quantised per output
    channel, their activations per call (ONNX Runtime's dynamic quantisation). Per channel
    kept the demo MiniLM's labels on 98.5% of rows against 94% per tensor."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, dest, weight_type=QuantType.QInt8, per_channel=True)
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


def check_exports(
    scorer: Exportable,
    folder: Path,
    rows: pd.DataFrame,
    min_agreement: float,
    try_int8: bool,
    num_threads: int = 1,
    heldout: HeldoutLogits | None = None,
) -> RuntimeRecord:
    """Export a model in ``folder`` to ONNX and check it against PyTorch on ``rows``.

    The fp32 export is kept when its labels agree with PyTorch's on at least
    ``min_agreement`` of the rows and it scores each row the same bit for bit whatever rows
    share its calls (checked by scoring the rows again in reverse order): an export whose
    rows interact would break the engines' byte-identical output. With ``try_int8``, an int8
    copy replaces it when it passes both checks too. ``runtime.json`` records what was
    measured and names the file scoring loads, or none (scoring stays on PyTorch). With
    ``heldout`` (this model's held-out logits, computed by the same weights), it also records
    how far what CPU scoring computes on ``rows`` lies from those logits, and whether both
    ran at the same precision.

    Returns:
        The record written.
    """
    import pandas as pd

    scorer.export_onnx(folder / ONNX_FILE)
    reference = scorer.score_rows(rows)
    expected = reference.to_numpy()

    def scored_with(file: str) -> tuple[np.ndarray, bool]:
        """An export's logits of ``rows``, and whether reversing the rows left them as is."""
        scorer.forward = OnnxForward(folder / file, num_threads)
        forward = scorer.score_rows(rows)
        backward = scorer.score_rows(rows.iloc[::-1]).loc[forward.index]
        return forward.to_numpy(), bool(np.array_equal(forward.to_numpy(), backward.to_numpy()))

    fp32, independent = scored_with(ONNX_FILE)
    logits = {ONNX_FILE: fp32}
    record = RuntimeRecord(
        ONNX_FILE, "fp32", len(expected), label_agreement(expected, fp32),
        max_prob_diff(expected, fp32), row_independent=independent,
    )  # fmt: skip
    if record.fp32_agreement < min_agreement or not independent:
        remove_export(folder / ONNX_FILE)
        record = replace(record, file=None, precision=None)
    elif try_int8:
        int8, int8_independent = scored_with(
            quantize_int8(folder / ONNX_FILE, folder / INT8_FILE).name
        )
        logits[INT8_FILE] = int8
        record = replace(
            record, int8_agreement=label_agreement(expected, int8),
            int8_row_independent=int8_independent,
        )  # fmt: skip
        if record.int8_agreement >= min_agreement and int8_independent:
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
