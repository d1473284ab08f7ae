"""Headless visualization: BEV drawings, camera overlays, one-picture sample renders."""
from perception.vis.draw import draw_bev, draw_camera, render_sample

__all__ = ["draw_bev", "draw_camera", "render_sample"]
