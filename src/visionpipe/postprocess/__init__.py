"""Post-processing shared by every decoder: NMS (nms.py) and fusion of ensemble members (fusion.py)."""

from visionpipe.postprocess.nms import nms

__all__ = ["nms"]
