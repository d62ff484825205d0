"""`paddle-cnn bench` on a tiny workload: JSON contents, PyTorch twins, errors, --ops. No timing assertions."""

import json
import os

import numpy as np
import paddle
import pytest

from paddle_cnn import onednn_conv
from paddle_cnn.bench import common, training
from paddle_cnn.bench.torch_twins import TORCH_MODELS, build_torch_model
from paddle_cnn.cli import main
from paddle_cnn.registry import build_model

TINY = ["--models", "lenet,resnet18:cifar", "--batch", "4", "--steps", "1", "--repeats", "1"]
ROW_NUMBERS = ("macs_per_image", "paddle_images_per_s", "paddle_gflops", "sgemm_fraction")


def _run_bench(tmp_path, *extra):
    path = tmp_path / "bench.json"
    assert main(["bench", *TINY, *extra, "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_bench_json_has_every_model_with_positive_numbers(tmp_path, capsys):
    result = _run_bench(tmp_path, "--no-torch")
    assert [r["model"] for r in result["rows"]] == ["lenet", "resnet18:cifar"]
    assert [r["input"] for r in result["rows"]] == [[1, 28, 28], [3, 32, 32]]
    for row in result["rows"]:
        assert row["batch"] == 4
        assert all(row[key] > 0 for key in ROW_NUMBERS), row
        assert row["torch_images_per_s"] is None and row["ratio"] is None
    # ResNet18 with the CIFAR stem does far more work per image than LeNet.
    assert result["rows"][1]["macs_per_image"] > 100 * result["rows"][0]["macs_per_image"]
    assert result["sgemm"]["gflops"] > 0 and result["omp_num_threads"] >= 1
    assert {"paddle", "numpy", "python"} <= set(result["versions"])
    assert result["cpu"]["vendor"] and "mkl_debug_cpu_type_source" in result and "busy_cores_before" in result
    table = capsys.readouterr().out
    assert "| lenet | 1x28x28 | 4 |" in table and "OMP_NUM_THREADS=" in table


def test_bench_includes_torch_when_installed(tmp_path):
    pytest.importorskip("torch")
    result = _run_bench(tmp_path)
    assert "torch" in result["versions"] and result["torch_threads"] == result["omp_num_threads"]
    for row in result["rows"]:
        assert row["torch_images_per_s"] > 0 and row["ratio"] > 0
        assert len(row["torch_repeats"]) == 1


def test_bench_without_torch_installed_notes_it(tmp_path, monkeypatch):
    monkeypatch.setattr("paddle_cnn.bench.torch_twins.torch_available", lambda: False)
    path = tmp_path / "bench.json"
    assert main(["bench", "--models", "lenet", "--batch", "2", "--steps", "1", "--repeats", "1",
                 "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert any("PyTorch is not installed" in note for note in result["notes"])
    assert result["rows"][0]["torch_images_per_s"] is None and result["rows"][0]["paddle_images_per_s"] > 0


def test_busy_machine_is_noted():
    assert any("busy" in note for note in common.notes(1.5, False, False))
    assert common.notes(0.1, True, True) == [] and common.notes(None, True, True) == []
    busy = common.busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6


def test_bench_unknown_model_lists_valid_names(capsys):
    assert main(["bench", "--models", "lenet,resnet99", "--no-torch"]) == 2
    err = capsys.readouterr().err
    assert "resnet99" in err and "resnet18_plain" in err and "lenet5" in err


def test_bench_bad_stem_is_a_user_error(capsys):
    assert main(["bench", "--models", "resnet18:tiny", "--no-torch"]) == 2
    assert "imagenet" in capsys.readouterr().err


def test_bench_ops_writes_rows(tmp_path):
    path = tmp_path / "ops.json"
    assert main(["bench", "--ops", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["ops"]
    assert {r["op"] for r in rows} == {"conv2d", "max_pool2d", "avg_pool2d"}
    assert all(r["scratch_ms"] > 0 and r["paddle_ms"] > 0 for r in rows)


def test_fit_epoch_rate_runs_through_batchloader():
    spec = common.parse_models("lenet")[0]
    model, _, step = training.paddle_train_step(spec, 4)
    step()
    assert training.epoch_rate(model, spec, batch=4, images=12) > 0


def _copy_paddle_to_torch(net, twin):
    """Copy paddle's state_dict into the twin's in registration order (Linear weights transposed)."""
    import torch

    p_state = list(net.state_dict().items())
    t_state = [(k, v) for k, v in twin.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(p_state) == len(t_state)
    with torch.no_grad():
        for (p_name, p), (t_name, t) in zip(p_state, t_state):
            value = p.numpy().T if p.ndim == 2 else p.numpy()
            assert list(value.shape) == list(t.shape), (p_name, t_name)
            t.copy_(torch.from_numpy(np.ascontiguousarray(value)))


@pytest.mark.parametrize("name,stem,shape", [
    ("lenet", None, (1, 28, 28)), ("lenet5", None, (1, 32, 32)),
    ("resnet18", "imagenet", (3, 32, 32)), ("resnet18", "cifar", (3, 32, 32)),
    ("resnet18_plain", "cifar", (3, 32, 32)),
])
def test_torch_twin_computes_the_same_function(name, stem, shape):
    torch = pytest.importorskip("torch")
    assert name in TORCH_MODELS
    net = build_model(name, **({"stem": stem} if stem else {}))
    twin = build_torch_model(name, shape[0], 10, stem)
    _copy_paddle_to_torch(net, twin)
    x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    net.train(), twin.train()  # BatchNorm on batch statistics, as in the bench's training step
    expected = net(paddle.to_tensor(x)).numpy()
    got = twin(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # Running means moved alike: paddle's momentum 0.9 is torch's 0.1. (Running variances differ
    # by design: torch stores the unbiased batch variance, paddle the biased one.)
    p_means = [v.numpy() for k, v in net.state_dict().items() if k.endswith("_mean")]
    t_means = [v.numpy() for k, v in twin.state_dict().items() if k.endswith("running_mean")]
    assert len(p_means) == len(t_means)
    for p_mean, t_mean in zip(p_means, t_means):
        np.testing.assert_allclose(t_mean, p_mean, rtol=1e-4, atol=1e-5)


def test_bench_times_paddles_conv_and_the_default_fast_conv_in_the_same_run(tmp_path, capsys):
    out = tmp_path / "fast.json"
    assert main(["bench", "--models", "resnet18", "--batch", "2", "--steps", "1", "--repeats", "1", "--no-torch",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    row = result["rows"][0]
    assert row["paddle_images_per_s"] > 0 and row["fast_conv_images_per_s"] > 0
    assert len(row["paddle_repeats"]) == len(row["fast_conv_repeats"]) == 1
    assert 0 < row["fast_conv_sgemm_fraction"] and 0 < row["sgemm_fraction"]
    table = capsys.readouterr().out
    assert "| resnet18 | 3x32x32 | 2 | paddle |" in table
    assert f"| resnet18 | 3x32x32 | 2 | fast_conv {row['default_kernel']} (default) |" in table
    # Both fast_conv kernels are timed wherever the operator builds, so auto's choice can be checked.
    other = "gemm" if row["default_kernel"] == "onednn" else "onednn"
    assert row["fast_conv_images_per_s"] == row[f"{row['default_kernel']}_images_per_s"]
    if other == "gemm" or onednn_conv.load() is not None:
        assert row[f"{other}_images_per_s"] > 0 and f"| resnet18 | 3x32x32 | 2 | fast_conv {other} |" in table
    else:
        assert row["onednn_images_per_s"] is None and "fast_conv onednn |" not in table
