"""LiDAR branch: voxelization, spconv sparse 3D backbone, height collapse to BEV."""
from perception.models.lidar.backbone import HeightCollapse, SparseBackbone3D
from perception.models.lidar.encoder import LidarEncoder

__all__ = ["HeightCollapse", "LidarEncoder", "SparseBackbone3D"]
