"""Every private Paddle API the project relies on still exists and means what compat.py says."""

from __future__ import annotations

import paddle

from paddle_cnn import compat


def test_optimizer_and_loss_of_a_prepared_model():
    net = paddle.nn.Linear(2, 2)
    opt = paddle.optimizer.SGD(learning_rate=0.5, parameters=net.parameters())
    loss = paddle.nn.CrossEntropyLoss()
    model = paddle.Model(net)
    assert compat.loss_of(model) is None
    model.prepare(opt, loss)
    assert compat.optimizer_of(model) is opt and compat.loss_of(model) is loss
    assert compat.optimizer_of(model).get_lr() == 0.5


def test_lr_scheduler_of_an_optimizer_is_what_it_was_built_with():
    sched = paddle.optimizer.lr.StepDecay(0.1, step_size=2)
    opt = paddle.optimizer.SGD(learning_rate=sched, parameters=paddle.nn.Linear(2, 2).parameters())
    assert compat.lr_scheduler_of(opt) is sched
    assert compat.lr_scheduler_of(paddle.optimizer.SGD(0.5, parameters=paddle.nn.Linear(2, 2).parameters())) == 0.5


def test_conv_geometry_reads_what_the_layer_was_built_with():
    g = compat.conv_geometry(paddle.nn.Conv2D(3, 4, (3, 5), stride=(2, 1), padding=(1, 2), dilation=1))
    assert g == compat.ConvGeometry((3, 5), (2, 1), (1, 2), (1, 1), 1, "NCHW", "zeros", "EXPLICIT")
    same = compat.conv_geometry(paddle.nn.Conv2D(3, 4, 3, padding="SAME", groups=1))
    assert same.padding_algorithm == "SAME"


def test_sot_tracing_is_seen_inside_to_static_only():
    class Probe(paddle.nn.Layer):
        def forward(self, x):
            for _ in range(12):  # SOT runs graphs of fewer ops eagerly, without simulating them
                x = paddle.nn.functional.relu(x + 0)
            return x * 2 if compat.in_sot_tracing() else x * 3

    x = paddle.ones([2])
    assert not compat.in_sot_tracing() and Probe()(x).tolist() == [3, 3]
    assert paddle.jit.to_static(Probe(), full_graph=False)(x).tolist() == [2, 2]


def test_conv_flops_counter_counts_a_conv_subclass():
    class Sub(paddle.nn.Conv2D):
        pass

    net = paddle.nn.Sequential(Sub(1, 2, 3, bias_attr=False))
    macs = paddle.flops(net, [1, 1, 5, 5], custom_ops={Sub: compat.conv_flops_counter()}, print_detail=False)
    assert macs == 2 * 1 * 9 * 3 * 3


def test_cifar10_url_prefix_is_a_url():
    assert compat.cifar10_url_prefix().startswith("https://")
