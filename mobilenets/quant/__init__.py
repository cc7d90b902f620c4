"""Quantization, shared by training (QAT) and every int8 exporter; below both, above the models.

- :mod:`~mobilenets.quant.fold`: BatchNorm folded into convolutions, TF "SAME" pads made static.
- :mod:`~mobilenets.quant.passes`: the ReLU6 graph passes (each ReLU6's conv output on its clamp's int8 grid).
- :mod:`~mobilenets.quant.ptq`: bias correction, cross-layer equalization, calibration choice, the PT2E recipe.
- :mod:`~mobilenets.quant.qat`: quantization-aware training through PT2E fake quantization.
"""
