"""Mixed precision from measured sensitivity: which layers can go INT4 within an accuracy budget.

For each enabled layer with weights that the config keeps at INT8, the
sensitivity is the drop of the metric when that layer alone goes INT4 (data
and weights), on the calibrated QAT model. Layers are then taken in order of
bytes saved per unit of sensitivity, and the longest such prefix is kept
whose QAT model, fine-tuned briefly, stays within `max_drop` of the all-as-
configured model fine-tuned alike (a binary search over the prefix length,
as the drop grows with it).
"""

import dataclasses
import sys

import numpy as np

from keras_qat.apply import apply_retrain_config
from keras_qat.atomic import check_writable
from keras_qat.config.jsonio import write_json_atomic
from keras_qat.config.validate import read_retrain_config
from keras_qat.errors import ConfigError
from keras_qat.graph.model_check import checked_model, model_layers
from keras_qat.layer_table import layer_spec


@dataclasses.dataclass
class LayerChoice:
    """One row of the search's table.

    Attributes:
        layer: Layer name.
        parameters: Number of weights quantized (all kernels).
        sensitivity: Metric drop (points) with this layer alone at INT4.
        bytes_saved: Bytes INT4 weights save against INT8.
        bits: 4 when chosen for INT4, else 8.
    """

    layer: str
    parameters: int
    sensitivity: float
    bytes_saved: float
    bits: int = 8


def _top1_metric(x, y):
    def metric(model):
        return 100.0 * float(np.mean(model.predict(x, verbose=0).argmax(-1) == np.asarray(y)))

    return metric


def _with_int4(document, names):
    document = {k: dict(v) if isinstance(v, dict) else v for k, v in document.items()}
    for name in names:
        entry = document[name]
        if "retrain_data_config" in entry:  # an Embedding has none
            entry["retrain_data_config"] = {**entry["retrain_data_config"], "dst_type": "INT4"}
        entry["retrain_weight_config"] = {**entry["retrain_weight_config"], "dst_type": "INT4"}
    return document


def _progress(step, total, what):
    print(f"\r{what}: {step}/{total}", end="" if step < total else "\n", file=sys.stderr)


def search_mixed_precision(
    model,
    config,
    calibration_data,
    evaluation,
    max_drop=0.5,
    fine_tune=None,
    output=None,
    overwrite=False,
    sensitivities=None,
):
    """Chooses the layers to quantize at INT4 within an accuracy budget.

    Args:
        model: The float tf_keras or Keras 3 model.
        config: The starting config (path, dict or `RetrainConfig`); its
            enabled INT8 layers with weights are the candidates.
        calibration_data: As for `apply_retrain_config`.
        evaluation: `(x, y)` held-out data scored by top-1 accuracy in
            percent, or a function `metric(qat_model) -> float` (higher is
            better, in points).
        max_drop: Largest metric drop allowed against the starting config,
            both fine-tuned alike. Defaults to 0.5.
        fine_tune: `(x, y, epochs, loss)` for the short QAT fine-tune that
            checks each choice, or `None` to check the calibrated models
            only. Defaults to `None`.
        output: Where to write the chosen config (JSON), or `None`.
            Defaults to `None`.
        overwrite: Replace an existing `output`. Defaults to `False`.
        sensitivities: The rows an earlier call returned for the same model,
            config and evaluation: their sensitivities are used instead of
            measured again, so that one measurement serves several budgets.
            Defaults to `None` (measured).

    Returns:
        `(config dict, rows)`: the chosen config and one `LayerChoice` per
        candidate, in the order they were considered.

    Raises:
        ConfigError: if no layer is a candidate, `max_drop` is negative, or
            `sensitivities` does not hold one row per candidate.
    """
    if max_drop < 0:
        raise ConfigError(f"max_drop must be >= 0. Received: max_drop={max_drop}")
    if output is not None:
        check_writable(output, overwrite)  # before the search, not after it
    model = checked_model(model)
    document = read_retrain_config(config, model).to_dict()
    metric = evaluation if callable(evaluation) else _top1_metric(*evaluation)
    layers = {layer.name: layer for layer in model_layers(model)}
    candidates = [
        name
        for name, entry in document.items()
        if isinstance(entry, dict)
        and entry["retrain_enable"]
        and "retrain_weight_config" in entry
        and entry.get("retrain_data_config", {}).get("dst_type", "INT8") == "INT8"
        and entry["retrain_weight_config"]["dst_type"] == "INT8"
    ]
    if not candidates:
        raise ConfigError("no enabled INT8 layer with weights to search over in the config.")

    def score(names, tuned):
        qat = apply_retrain_config(model, _with_int4(document, names), calibration_data)
        if tuned and fine_tune is not None:
            x, y, epochs, loss = fine_tune
            qat.compile("adam", loss)
            qat.fit(x, y, epochs=epochs, verbose=0)
        return metric(qat)

    if sensitivities is None:
        base = score([], tuned=False)
        rows = []
        for index, name in enumerate(candidates, 1):
            _progress(index, len(candidates), "sensitivity")
            spec = layer_spec(layers[name])
            parameters = sum(int(np.prod(getattr(layers[name], a).shape)) for a, _ in spec.kernels)
            rows.append(LayerChoice(name, parameters, base - score([name], False), parameters / 2))
    else:
        given = [row.layer for row in sensitivities]
        if sorted(given) != sorted(candidates):
            raise ConfigError(
                f"sensitivities: rows for {sorted(given)} do not match the config's candidate "
                f"layers {sorted(candidates)}."
            )
        rows = [dataclasses.replace(row, bits=8) for row in sensitivities]
    order = sorted(
        rows, key=lambda r: r.bytes_saved / (max(r.sensitivity, 0.0) + 1e-3), reverse=True
    )
    reference = score([], tuned=True)
    low, high = 0, len(order)  # the longest prefix within the budget lies in [low, high]
    steps, total = 0, max(1, int(np.ceil(np.log2(len(order) + 1))))
    while low < high:
        middle = (low + high + 1) // 2
        steps += 1
        _progress(min(steps, total), total, "budget check")
        if reference - score([r.layer for r in order[:middle]], tuned=True) <= max_drop:
            low = middle
        else:
            high = middle - 1
    for row in order[:low]:
        row.bits = 4
    chosen = _with_int4(document, [r.layer for r in order[:low]])
    if output is not None:
        write_json_atomic(output, chosen, overwrite=overwrite)
    return chosen, rows


def format_table(rows):
    """The search's table as text: layer, parameters, sensitivity, bytes saved, bits."""
    lines = [f"{'layer':<24} {'params':>9} {'sensitivity':>12} {'saved B':>9} {'bits':>5}"]
    for r in rows:
        lines.append(
            f"{r.layer:<24} {r.parameters:>9} {r.sensitivity:>12.2f} "
            f"{r.bytes_saved:>9.0f} {r.bits:>5}"
        )
    return "\n".join(lines)


def plot_choices(rows, path):
    """Draws the search's result: each layer's sensitivity, coloured by the bits chosen.

    Args:
        rows: The `LayerChoice` rows `search_mixed_precision` returned.
        path: The image file to write (PNG, SVG, ... by its extension).

    Returns:
        The path.

    Raises:
        ImportError: when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("The search's plot needs matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.2))
    colours = ["tab:orange" if r.bits == 4 else "tab:blue" for r in rows]
    ax.barh([r.layer for r in rows], [r.sensitivity for r in rows], color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy drop with the layer alone at INT4 (points)")
    ax.set_title("orange: INT4 chosen, blue: INT8 kept", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
