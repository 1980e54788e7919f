"""mmboundary: step-level confidence calibration for vision-language models.

Implements MMBoundary (He et al., ACL 2025, arXiv 2505.23224): after every reasoning step the
model writes a natural-language confidence statement, learned by an SFT warm-up on internal
confidence signals and calibrated by PPO with per-step rewards.
"""

__version__ = "0.1.0"
