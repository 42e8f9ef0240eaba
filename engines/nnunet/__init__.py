"""nnU-Net v2 trained models on the appliance: import (folder/zip -> ONNX pack) and nnU-Net-equivalent inference.

Modules: ``plans`` (read/validate the folder), ``network`` (build, load checkpoint, export ONNX), ``importer``
(write the pack), ``recipe`` (the ``pack.json`` ``nnunet`` table), ``preprocessing`` / ``resampling`` /
``sliding_window`` (nnU-Net's rules), ``predict`` (run a pack on a Volume), ``preset`` (``pack:NAME``).
Importing needs torch and dynamic_network_architectures; inference needs onnxruntime, NumPy and SciPy only.
"""
