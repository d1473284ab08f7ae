"""perception: a camera + LiDAR + radar BEV fusion perception stack for autonomous driving.

Importing the package must stay cheap and work without a GPU or a compiler; subpackages are
imported explicitly (``from perception.data import NuScenesDataset``).
"""

__version__ = "0.1.0"
