"""The model contract that training and the kernel share: the classifier around a timm encoder
(``zoo``), the checkpoint format (``checkpoint``), packaged ImageNet weights (``pretrained``), score
calibration, precision and the metric. Imports ``preprocessing`` only."""
