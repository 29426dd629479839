"""Fusion networks trained by this project: architectures, weights, losses and training.

The fusion methods that use them are registered in :mod:`MedFusionLib.fusion.cnn`; this
package holds what they need: the networks (:mod:`.networks`), their shipped weights with
recorded SHA-256 (:mod:`.weights`), the training data made from images the project may use
(:mod:`.data`), the losses (:mod:`.losses`) and the training loop (:mod:`.train`).
"""
