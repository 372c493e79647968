"""Evaluation of trained runs: rate-distortion curves over beta and their metrics."""
from .run import AU_THRESHOLD, evaluate_run, fid_curve, load_eval_data, load_run_model, rd_sweep, save_image_grids

__all__ = ["evaluate_run", "rd_sweep", "fid_curve", "load_run_model", "load_eval_data", "save_image_grids",
           "AU_THRESHOLD"]
