"""``medfusion benchmark``: run fusion methods over folders of registered pairs, score them with
the reference protocol, and report the results beside published and peer rows; on a folder of
patients (``STS_*``), the 3-D clinical benchmark of :mod:`MedFusionLib.benchmark.clinical`."""
