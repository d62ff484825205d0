"""paddle-cnn: config-driven CNN training on PaddlePaddle's high-level API.

Importing this package must not import paddle: `paddle_cnn.runtime.setup()` has to run first
(thread count and MKL vendor switch are read when paddle's libraries load).
"""

__version__ = "0.1.0"
