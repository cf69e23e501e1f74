"""Inference with trained classifiers: top-k predictions for image files, attention maps.

``predict_classifier(checkpoint, paths)`` (``botnet predict``) and ``attention_maps(model, image)`` /
``draw_attention_grid`` (``botnet attention``). Import the submodules: ``botnet.inference.classify``,
``botnet.inference.attention``.
"""
