"""Camera branch: ResNet-style CNN + FPN, depth-distribution lift (LSS) into the BEV grid."""
from perception.models.camera.backbone import FPN, ResNetBackbone
from perception.models.camera.encoder import CameraEncoder
from perception.models.camera.lift import DepthLift, depth_bin_centers, frustum_points
from perception.models.camera.transforms import resize_images

__all__ = ["CameraEncoder", "DepthLift", "FPN", "ResNetBackbone", "depth_bin_centers",
           "frustum_points", "resize_images"]
