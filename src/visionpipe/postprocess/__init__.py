"""Post-processing shared by every decoder: NMS now, fusion of ensemble members later."""

from visionpipe.postprocess.nms import nms

__all__ = ["nms"]
