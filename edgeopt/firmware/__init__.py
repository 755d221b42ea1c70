"""The firmware check: a model built into TensorFlow Lite Micro firmware for an Arm Cortex-M core, run in
QEMU, compared byte for byte with TFLite Micro's Python interpreter, and measured.

- ``tree``: the TFLite Micro source tree (read-only input) and its fingerprint;
- ``ops``: the op resolver and kernel list, generated from the model's operators;
- ``example``: the example firmware (``main.cc``, ``Makefile``, startup, linker scripts) the bundle's
  ``mcu/`` ships and the check builds;
- ``build``: the cross compiler, the content-addressed library cache, ``make``;
- ``sizes``: flash and RAM from the ELF and its linker map;
- ``estimate``: latency and energy on a board from the instructions counted;
- ``check``: all of it for a bundle or a ``.tflite`` (``edgeopt firmware``).

The QEMU runner is ``edgeopt.runtimes.qemu``.
"""
