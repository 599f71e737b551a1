"""QAT under MultiWorkerMirroredStrategy: two worker processes on this machine, and a worker killed.

Each worker is a fresh interpreter with its own `TF_CONFIG` (localhost ports).
Slow: every run starts TensorFlow in two processes.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
import keras_qat
from keras_qat._keras import keras
from keras_qat.datasets import load_digits
from keras_qat.demo import LOSS

out, crash_at = sys.argv[1], int(sys.argv[2])
strategy = (
    tf.distribute.MultiWorkerMirroredStrategy()
    if "TF_CONFIG" in os.environ
    else tf.distribute.get_strategy()
)
index = json.loads(os.environ.get("TF_CONFIG", '{"task": {"index": 0}}'))["task"]["index"]
x, y, _, _ = load_digits()
model = keras_qat.load_model(os.path.join(out, "..", "float.keras"))
config = {n: {} for n in ("conv1", "dwconv2", "pwconv2", "pool2", "logits")}
with strategy.scope():
    qat = keras_qat.apply_retrain_config(model, config, x[:256])
    qat.compile(keras.optimizers.Adam(1e-3), LOSS)
calibrated = keras_qat.quant_report(qat)


class Crash(keras.callbacks.Callback):  # a worker dying mid-epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.model.optimizer.iterations.numpy() == crash_at:
            os._exit(3)


class Epochs(keras.callbacks.Callback):  # the epochs this process ran
    ran = []

    def on_epoch_begin(self, epoch, logs=None):
        self.ran.append(epoch)


options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
data = tf.data.Dataset.from_tensor_slices((x[:1280], y[:1280])).batch(64).with_options(options)
callbacks = [keras.callbacks.BackupAndRestore(os.path.join(out, "backup")), Epochs()]
if crash_at >= 0 and index == 1:
    callbacks.append(Crash())
qat.fit(data, epochs=3, verbose=0, callbacks=callbacks)
np.savez(os.path.join(out, f"weights_{index}.npz"), *qat.get_weights())
with open(os.path.join(out, f"report_{index}.json"), "w") as f:
    json.dump({"calibrated": calibrated, "final": keras_qat.quant_report(qat),
               "iterations": int(qat.optimizer.iterations.numpy()), "epochs": Epochs.ran}, f)
"""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(run_dir, index, ports, crash_at):
    env = dict(os.environ)
    if ports is not None:
        workers = [f"localhost:{p}" for p in ports]
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
    run_dir.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(run_dir), str(crash_at)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _workers(run_dir, crash_at=-1, ports=None):
    ports = ports or _free_ports(2)
    return [_start(run_dir, i, ports, crash_at) for i in range(2)], ports


def _wait(processes, timeout=600):
    results = []
    for process in processes:
        try:
            _, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        results.append((process.returncode, err))
    return results


def _weights(run_dir, index):
    with np.load(run_dir / f"weights_{index}.npz") as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    from keras_qat._keras import keras
    from keras_qat.datasets import load_digits
    from keras_qat.demo import LOSS, build_demo_model

    root = tmp_path_factory.mktemp("multi_worker")
    x, y, _, _ = load_digits()
    keras.utils.set_random_seed(0)
    model = build_demo_model()
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    model.save(root / "float.keras")
    return root


@pytest.mark.slow
def test_two_workers_calibrate_alike_and_match_one_process(float_model):
    single = float_model / "single"
    single.mkdir()
    ((rc, err),) = _wait([_start(single, 0, None, -1)])
    assert rc == 0, err[-3000:]
    pair = float_model / "pair"
    processes, _ = _workers(pair)
    for rc, err in _wait(processes):
        assert rc == 0, err[-3000:]
    reports = [json.loads((pair / f"report_{i}.json").read_text()) for i in range(2)]
    assert reports[0]["calibrated"] == reports[1]["calibrated"]
    one = json.loads((single / "report_0.json").read_text())
    assert reports[0]["calibrated"] == one["calibrated"]
    assert reports[0]["iterations"] == one["iterations"] == 3 * 20
    assert reports[0]["epochs"] == [0, 1, 2]
    for a, b in zip(_weights(pair, 0), _weights(pair, 1), strict=True):
        np.testing.assert_array_equal(a, b)  # replicas hold one model
    reference = _weights(single, 0)
    largest = max(float(np.max(np.abs(w))) for w in reference)
    for a, b in zip(_weights(pair, 0), reference, strict=True):
        # The two workers sum their gradients in another order than one process.
        assert float(np.max(np.abs(a - b))) < 0.02 * largest


@pytest.mark.slow
def test_a_killed_worker_restarts_from_the_backup(float_model):
    whole = float_model / "whole"
    processes, _ = _workers(whole)
    for rc, err in _wait(processes):
        assert rc == 0, err[-3000:]
    broken = float_model / "broken"
    crash_at = 20 + 7  # the 8th step of the second epoch
    processes, ports = _workers(broken, crash_at)
    results = _wait(processes, timeout=300)
    assert results[1][0] == 3  # the worker that died
    assert not (broken / "weights_0.npz").exists()  # the job did not finish without it
    processes, _ = _workers(broken, ports=ports)  # the cluster restarted: both resume
    for rc, err in _wait(processes):
        assert rc == 0, err[-3000:]
    report = json.loads((broken / "report_0.json").read_text())
    assert report["epochs"] == [1, 2]  # resumed after the first epoch, from its backup
    assert report["iterations"] == 3 * 20
    for a, b in zip(_weights(broken, 0), _weights(whole, 0), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
