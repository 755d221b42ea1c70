"""The stages: each takes a model and data and returns a StageResult (plain model or .tflite + metrics)."""

from edgeopt.stages._common import StageResult
from edgeopt.stages.cluster import cluster
from edgeopt.stages.convert import ConversionError, convert
from edgeopt.stages.distill import distill
from edgeopt.stages.prune import prune
from edgeopt.stages.qat import qat
from edgeopt.stages.train import train
from edgeopt.stages.validate import validate

__all__ = ["StageResult", "ConversionError", "cluster", "convert", "distill", "prune", "qat", "train", "validate"]
